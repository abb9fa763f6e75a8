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
  const all = waiting.get(signal) ?? listen(signal)
  // Its own entry: the same function given twice runs twice, and each forget takes one.
  const mine = () => then()
  all.add(mine)
  return () => void all.delete(mine)
}

/** The one listener of `signal`: every callback, as separate listeners would run them (one that throws stops none of the others; it is rethrown after). */
function listen(signal: AbortSignal): Set<() => void> {
  const all = new Set<() => void>()
  waiting.set(signal, all)
  signal.addEventListener('abort', () => {
    waiting.delete(signal)
    let thrown: { e: unknown } | undefined
    for (const f of all) {
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
  return all
}
