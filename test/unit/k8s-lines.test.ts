// A watch stream's lines a slice at a time (src/sources/kubernetes/lines.ts): every whole line in order, whatever
// the chunking; the stream paused past a slice and resumed once every line is handed over; the end after them.
import fc from 'fast-check';
import { LinePump } from '../../src/sources/kubernetes/lines';

/** A pump over a fake clock (each line costs `cost` ms) with deferred drains run by hand. */
function rig(o: { sliceMs?: number; cost?: number; stopAt?: string } = {}) {
  let t = 0;
  const lines: string[] = [];
  const events: string[] = [];
  const deferred: (() => void)[] = [];
  const pump = new LinePump({
    onLine: (l) => {
      lines.push(l);
      t += o.cost ?? 1;
      return l !== o.stopAt;
    },
    pause: () => events.push('pause'),
    resume: () => events.push('resume'),
    sliceMs: o.sliceMs ?? 5,
    now: () => t,
    defer: (f) => deferred.push(f),
  });
  const turn = (): boolean => {
    const f = deferred.shift();
    f?.();
    return f !== undefined;
  };
  return { pump, lines, events, deferred, turn };
}

describe('LinePump', () => {
  it('hands over whole lines in order across chunks, skipping blank ones; the end after the last', () => {
    const r = rig({ cost: 0 });
    r.pump.push('{"a":1}\n{"b"');
    expect(r.lines).toEqual(['{"a":1}']);
    r.pump.push(':2}\n\n  \n{"c":3}\n{"partial"');
    expect(r.lines).toEqual(['{"a":1}', '{"b":2}', '{"c":3}']);
    let ended = 0;
    r.pump.end(() => ended++);
    r.pump.end(() => (ended += 10)); // only the first end's callback
    expect(ended).toBe(1);
    expect(r.lines).toHaveLength(3); // the partial last line is dropped
    expect(r.events).toEqual([]); // never paused: each push took no time
  });

  it('pauses the stream after a slice, goes on after a turn, resumes once every line is handed over', () => {
    const r = rig({ sliceMs: 5, cost: 1 });
    const all = Array.from({ length: 12 }, (_, i) => `l${i}`);
    r.pump.push(all.map((l) => `${l}\n`).join(''));
    expect(r.lines).toEqual(all.slice(0, 5));
    expect(r.events).toEqual(['pause']);
    // What arrives while paused waits its turn, after the lines before it.
    r.pump.push('late\n');
    let ended = false;
    r.pump.end(() => (ended = true));
    expect(r.lines).toHaveLength(5);
    expect(ended).toBe(false);
    expect(r.turn()).toBe(true);
    expect(r.lines).toEqual(all.slice(0, 10));
    expect(r.events).toEqual(['pause']); // paused once, not again
    expect(r.turn()).toBe(true);
    expect(r.lines).toEqual([...all, 'late']);
    expect(r.events).toEqual(['pause', 'resume']);
    expect(ended).toBe(true);
    expect(r.turn()).toBe(false);
  });

  it('stops at a line onLine refuses: nothing after it, now or later', () => {
    const r = rig({ cost: 0, stopAt: 'b' });
    r.pump.push('a\nb\nc\n');
    r.pump.push('d\n');
    expect(r.lines).toEqual(['a', 'b']);
    let ended = false;
    r.pump.end(() => (ended = true));
    expect(ended).toBe(true);
  });

  it('stop() while paused: the waiting lines are dropped and the stream is not resumed', () => {
    const r = rig({ sliceMs: 2, cost: 1 });
    r.pump.push('a\nb\nc\nd\n');
    expect(r.lines).toEqual(['a', 'b']);
    r.pump.stop();
    r.turn();
    expect(r.lines).toEqual(['a', 'b']);
    expect(r.events).toEqual(['pause']);
  });

  it('any chunking and any slice: the lines handed over are the whole lines, in order (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.stringMatching(/^[a-z{}":0-9 ]{0,12}$/), { maxLength: 40 }),
        fc.array(fc.integer({ min: 1, max: 30 }), { minLength: 1, maxLength: 10 }),
        fc.integer({ min: 1, max: 6 }),
        (raw, cuts, sliceMs) => {
          const text = raw.map((l) => `${l}\n`).join('');
          const r = rig({ sliceMs, cost: 1 });
          let at = 0;
          for (let i = 0; at < text.length; i++) {
            const n = cuts[i % cuts.length]!;
            r.pump.push(text.slice(at, at + n));
            at += n;
            if (i % 2 === 0) r.turn();
          }
          let ended = false;
          r.pump.end(() => (ended = true));
          while (r.turn());
          expect(r.lines).toEqual(raw.map((l) => l.trim()).filter((l) => l !== ''));
          expect(ended).toBe(true);
          // Every pause was followed by a resume.
          expect(r.events.filter((e) => e === 'pause').length).toBe(
            r.events.filter((e) => e === 'resume').length,
          );
        },
      ),
    );
  });
});
