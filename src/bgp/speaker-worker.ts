// Entry of the BGP speaker's worker thread (started by BgpSpeakerThread): its own event loop runs the sessions.
// A composition root: it picks the socket factory with TCP MD5 (the native binding) for the speaker.
import { parentPort, workerData } from 'node:worker_threads';
import { md5BgpSockets } from '../datapath/bgp-sockets';
import { hostSpeaker } from './speaker-host';
import type { SpeakerWorkerInit } from './speaker-protocol';

if (!parentPort) throw new Error('speaker-worker runs as a worker thread (BgpSpeakerThread starts it)');
hostSpeaker({ port: parentPort, init: workerData as SpeakerWorkerInit, sockets: md5BgpSockets });
