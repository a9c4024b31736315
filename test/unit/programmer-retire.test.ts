// When the table workers' retirement collects garbage first (Programmer: retireCollects).
import { RETIRE_COLLECT_MAX_HEAP, retireCollects } from '../../src/daemon/programmer';

describe('retireCollects', () => {
  it('collects after a burst while the heap is small enough for a brief pause', () => {
    expect(retireCollects({ heapUsed: 30 * 2 ** 20, atStart: false })).toBe(true);
    expect(retireCollects({ heapUsed: RETIRE_COLLECT_MAX_HEAP, atStart: false })).toBe(true);
    expect(retireCollects({ heapUsed: RETIRE_COLLECT_MAX_HEAP + 1, atStart: false })).toBe(false);
  });

  it("never at the daemon's start, which collects right after whatever the heap", () => {
    expect(retireCollects({ heapUsed: 30 * 2 ** 20, atStart: true })).toBe(false);
    expect(retireCollects({ heapUsed: 10 * RETIRE_COLLECT_MAX_HEAP, atStart: true })).toBe(false);
  });
});
