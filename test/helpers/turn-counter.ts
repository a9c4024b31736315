// Counts event-loop turns: one setImmediate per turn, rescheduling itself until stopped.

export interface TurnCounter {
  /** Turns seen so far. */
  readonly turns: number;
  /** Stops counting (the last scheduled callback runs once more and does not reschedule). */
  stop(): void;
}

export function countTurns(): TurnCounter {
  let turns = 0;
  let on = true;
  const tick = (): void => {
    turns++;
    if (on) setImmediate(tick);
  };
  setImmediate(tick);
  return {
    get turns() {
      return turns;
    },
    stop: () => {
      on = false;
    },
  };
}
