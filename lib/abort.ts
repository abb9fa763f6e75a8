/**
 * One 'abort' listener per AbortSignal, however many calls share it: a caller that passes one
 * signal to many sandboxes at once (an agent's request, ended as a whole) would otherwise get
 * Node's MaxListenersExceededWarning past ten, for listeners that are all removed in the end.
 */
const waiting = new WeakMap<AbortSignal, Set<() => void>>()

/** Run `then` when `signal` aborts (at once if it has). Returns what forgets it. */
export function whenAborted(signal: AbortSignal, then: () => void): () => void {
  if (signal.aborted) {
    then()
    return () => {}
  }
  let all = waiting.get(signal)
  if (!all) {
    const set = new Set<() => void>()
    all = set
    waiting.set(signal, set)
    signal.addEventListener('abort', () => {
      waiting.delete(signal)
      // Each one, as separate listeners would be: one that throws stops none of the others.
      let thrown: { e: unknown } | undefined
      for (const f of set) {
        try {
          f()
        } catch (e) {
          thrown ??= { e }
        }
      }
      if (thrown) queueMicrotask(() => {
        throw thrown.e
      })
    }, { once: true })
  }
  const mine = () => then()
  all.add(mine)
  const set = all
  return () => void set.delete(mine)
}
