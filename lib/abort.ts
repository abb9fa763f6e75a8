/**
 * One 'abort' listener per AbortSignal, however many calls share it: a caller that passes one
 * signal to many sandboxes at once (an agent's request, ended as a whole) would otherwise get
 * Node's MaxListenersExceededWarning past ten, for listeners that are all removed in the end.
 */
const waiting = new WeakMap<AbortSignal, Set<() => void>>()

// The platform's own accessors: a signal's state as Node keeps it, whatever the object was given
// (an own `aborted` getter that answers differently on each read, or throws, would otherwise
// decide whether a started sandbox is ended or waited for).
const abortedOf = Object.getOwnPropertyDescriptor(AbortSignal.prototype, 'aborted')!.get!
const reasonOf = Object.getOwnPropertyDescriptor(AbortSignal.prototype, 'reason')!.get!
const addListener = EventTarget.prototype.addEventListener

/** Whether `signal` has aborted, as Node's own state of it says. */
export function isAborted(signal: AbortSignal | undefined): boolean {
  return signal !== undefined && (abortedOf.call(signal) as boolean)
}

/** Why `signal` aborted, as Node's own state of it says. */
export function abortReason(signal: AbortSignal): unknown {
  return reasonOf.call(signal)
}

/** An AbortSignal Node made (`AbortController`, `AbortSignal.timeout`, `.any`), not an object that only inherits from one. */
export function isAbortSignal(v: unknown): v is AbortSignal {
  try {
    abortedOf.call(v)
    return true
  } catch {
    return false
  }
}

/** Run `then` when `signal` aborts (at once if it has). Returns what forgets it. */
export function whenAborted(signal: AbortSignal, then: () => void): () => void {
  if (isAborted(signal)) {
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
  addListener.call(signal, 'abort', () => {
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
