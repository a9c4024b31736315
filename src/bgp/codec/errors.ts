// The error value every decoder returns instead of throwing: code and subcode typed by the enums.
import { CeaseSub, ErrCode, FsmSub, HeaderSub, OpenSub, UpdateSub } from './constants';
import { BgpError } from './types';

/** The subcode enum of each error code, so a call site cannot pair a code with another code's subcode. */
export interface SubcodeOf {
  [ErrCode.HEADER]: HeaderSub;
  [ErrCode.OPEN]: OpenSub;
  [ErrCode.UPDATE]: UpdateSub;
  [ErrCode.HOLD_TIMER_EXPIRED]: 0;
  [ErrCode.FSM]: FsmSub;
  [ErrCode.CEASE]: CeaseSub;
}

/** A session-resetting error (RFC 4271 §6): the NOTIFICATION to send and why. */
export function fatal<C extends ErrCode>(
  code: C,
  subcode: SubcodeOf[C],
  reason: string,
  data: Buffer = Buffer.alloc(0),
): BgpError {
  return { code, subcode, data, action: 'session-reset', reason };
}
