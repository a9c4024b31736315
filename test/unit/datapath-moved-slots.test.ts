// markMovedSlots / slotBackendId: the PEAK_SLOT_F_MOVED marks KernelDatapath stores in a current Maglev table
// (bpf/select.h reads the previous table only for marked slots). Needs the built object's BTF, not root.
import { markMovedSlots, slotBackendId } from '../../src/datapath/layout';
import { sharedContract } from '../../src/datapath/contract';

const FLAG = 2 ** 31;

describe('markMovedSlots', () => {
  it('is bit 31, as bpf/shared.h says', () => {
    expect(sharedContract().slotMovedBit).toBe(31);
  });

  it('without a previous table: the table itself', () => {
    const t = Uint32Array.from([1, 2, 3]);
    expect(markMovedSlots(t, null)).toBe(t);
  });

  it('marks exactly the slots whose previous owner differs (same size)', () => {
    const cur = Uint32Array.from([1, 2, 3, 1, 2]);
    const prev = Uint32Array.from([1, 3, 3, 2, 2]);
    expect(Array.from(markMovedSlots(cur, prev))).toEqual([1, 2 + FLAG, 3, 1 + FLAG, 2]);
    expect(Array.from(cur)).toEqual([1, 2, 3, 1, 2]); // input untouched
  });

  it('marks every slot when the sizes differ (the previous slot is hash % its own M)', () => {
    const cur = Uint32Array.from([1, 2, 3]);
    expect(Array.from(markMovedSlots(cur, Uint32Array.from([1, 2, 3, 1, 2])))).toEqual([
      1 + FLAG,
      2 + FLAG,
      3 + FLAG,
    ]);
  });

  it('slotBackendId strips the mark only', () => {
    expect(slotBackendId(7 + FLAG)).toBe(7);
    expect(slotBackendId(7)).toBe(7);
    expect(slotBackendId(0x7fffffff)).toBe(0x7fffffff);
  });
});
