// Entry of the BGP speaker's worker thread (started by BgpSpeakerThread): its own event loop runs the sessions.
import { parentPort, workerData } from 'node:worker_threads';
import { hostSpeaker } from './speaker-host';
import type { SpeakerWorkerInit } from './speaker-protocol';

if (!parentPort) throw new Error('speaker-worker runs as a worker thread (BgpSpeakerThread starts it)');
hostSpeaker({ port: parentPort, init: workerData as SpeakerWorkerInit });
