// Reconnect delays: 0.5 s doubling up to 10 s, each scaled by a random factor so that many kiosks
// restarting together with the daemon do not all knock at the same instant.

export interface BackoffOptions {
  baseMs: number
  maxMs: number
  /** Each delay is scaled by a factor drawn from [1 - jitter, 1 + jitter], then capped at maxMs. */
  jitter: number
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 10_000, jitter: 0.2 }

/** The delay before reconnect attempt `attempt` (0 = the first retry after a drop). */
export function backoffDelay(attempt: number, random: () => number = Math.random, options = DEFAULT_BACKOFF): number {
  const exponent = Math.min(Math.max(0, attempt), 30) // 2^30 is far past any cap; avoids Infinity.
  const nominal = Math.min(options.maxMs, options.baseMs * 2 ** exponent)
  const factor = 1 - options.jitter + 2 * options.jitter * random()
  return Math.round(Math.min(options.maxMs, nominal * factor))
}
