// Undo list: every acquired resource registers its release; a failure unwinds them newest first.

export interface UndoFailure {
  what: string;
  error: unknown;
}

export class UndoList {
  private readonly steps: { what: string; fn: () => Promise<void> | void }[] = [];

  /** Registers how to give back what a step just acquired (`what` names it for error details). */
  push(what: string, fn: () => Promise<void> | void): void {
    this.steps.push({ what, fn });
  }

  get size(): number {
    return this.steps.length;
  }

  /** Keeps everything: the operation succeeded and the resources now belong to their owner. */
  commit(): void {
    this.steps.length = 0;
  }

  /** Runs every undo step newest first; one failing step does not stop the others. */
  async unwind(): Promise<UndoFailure[]> {
    const failures: UndoFailure[] = [];
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.fn();
      } catch (error) {
        failures.push({ what: step.what, error });
      }
    }
    return failures;
  }
}
