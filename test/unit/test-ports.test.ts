// The test-port helper: slices below the ephemeral range, one per jest worker, never overlapping.
import { ephemeralLow, testPorts, workerSlice } from '../helpers/ports';

describe('test ports', () => {
  it('gives each worker its own slice, all below the ephemeral range', () => {
    const low = ephemeralLow();
    expect(low).toBeGreaterThan(1024);
    const a = workerSlice(1, 32768);
    const b = workerSlice(2, 32768);
    expect(a.to).toBeLessThanOrEqual(b.from);
    expect(b.to).toBeLessThanOrEqual(32768);
    expect(() => workerSlice(8, 32768)).toThrow(/worker 8 needs .* ephemeral range starts at 32768/);
  });

  it('hands out a block inside this worker slice, below the ephemeral range', () => {
    const worker = Number(process.env.JEST_WORKER_ID ?? '1') || 1;
    const { from, to } = workerSlice(worker, ephemeralLow());
    for (let i = 0; i < 200; i++) {
      const p = testPorts(5);
      expect(p).toBeGreaterThanOrEqual(from);
      expect(p + 5).toBeLessThanOrEqual(to);
      expect(p + 5).toBeLessThanOrEqual(ephemeralLow());
    }
    expect(() => testPorts(0)).toThrow(/cannot hand out 0 ports/);
  });
});
