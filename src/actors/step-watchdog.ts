// The step watchdog (RankJob.watchdogMs): a step in which nothing happens — no protocol state entered or left, no
// collective issued or completed, none in flight — for `ms` fails with a description of where every machine is.
// Collective timeouts cannot see a rank waiting on a dropped protocol event or a stage that never settles; this
// does. A check that runs late means the event loop was busy computing, which counts as progress.

export class StepWatchdog {
  private progressAt = performance.now();

  /** Call on every sign of progress (trace events of transitions and collectives). */
  touch(): void {
    this.progressAt = performance.now();
  }

  /**
   * Watches until stop(); `tripped` rejects with `describe(stillMs)` when the step stood still for `ms` while
   * `inCollective()` was false.
   */
  watch(
    ms: number,
    inCollective: () => boolean,
    describe: (stillMs: number) => string,
  ): { tripped: Promise<never>; stop(): void } {
    let timer: ReturnType<typeof setInterval> | undefined;
    const tripped = new Promise<never>((_, reject) => {
      if (!(ms > 0)) return;
      this.touch();
      const period = ms / 4;
      let expected = performance.now() + period;
      timer = setInterval(() => {
        const now = performance.now();
        if (now - expected > period / 2) this.progressAt = now;
        expected = now + period;
        if (inCollective() || now - this.progressAt < ms) return;
        clearInterval(timer);
        reject(new Error(describe(now - this.progressAt)));
      }, period);
      timer.unref?.();
    });
    tripped.catch(() => {});
    return { tripped, stop: () => clearInterval(timer) };
  }
}
