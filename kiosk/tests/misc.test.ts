import { describe, expect, it, vi } from 'vitest'
import { isSendKey } from '../src/composerKeys'
import { deriveStatus, type StatusInput } from '../src/status'
import { frameThrottle } from '../src/util/frameThrottle'
import { shortTime } from '../src/util/relativeTime'

describe('isSendKey', () => {
  it('sends on Enter only', () => {
    expect(isSendKey({ key: 'Enter', shiftKey: false })).toBe(true)
    expect(isSendKey({ key: 'Enter', shiftKey: true })).toBe(false)
    expect(isSendKey({ key: 'a', shiftKey: false })).toBe(false)
  })

  it('never sends while an IME composition is confirmed', () => {
    expect(isSendKey({ key: 'Enter', shiftKey: false, isComposing: true })).toBe(false)
    expect(isSendKey({ key: 'Enter', shiftKey: false, keyCode: 229 })).toBe(false)
    expect(isSendKey({ key: 'Enter', shiftKey: false }, true)).toBe(false)
  })
})

describe('deriveStatus', () => {
  const base: StatusInput = {
    link: { phase: 'open', failures: 0, retryAt: null, everOpened: true },
    connected: true, ready: true, answering: false, speaking: false, online: true, now: 0,
  }
  const state = (over: Partial<StatusInput>) => deriveStatus({ ...base, ...over }).state

  it('follows the model and the answer while connected', () => {
    expect(state({})).toBe('ready')
    expect(state({ ready: null })).toBe('connecting')
    expect(state({ ready: false })).toBe('loading')
    expect(state({ answering: true })).toBe('thinking')
    expect(state({ answering: true, speaking: true })).toBe('speaking')
  })

  it('tells a first connection from a reconnection, with the countdown', () => {
    expect(state({ connected: false, link: { phase: 'connecting', failures: 0, retryAt: null, everOpened: false } })).toBe('connecting')
    const waiting = deriveStatus({
      ...base, connected: false, now: 1000, link: { phase: 'waiting', failures: 2, retryAt: 3500, everOpened: true },
    })
    expect(waiting).toEqual({ state: 'reconnecting', secondsLeft: 3 })
  })

  it('is offline after many failures or without a network', () => {
    expect(state({ connected: false, link: { phase: 'waiting', failures: 6, retryAt: 0, everOpened: true } })).toBe('offline')
    expect(state({ connected: false, online: false, link: { phase: 'waiting', failures: 1, retryAt: 0, everOpened: true } })).toBe('offline')
  })
})

describe('frameThrottle', () => {
  it('runs at most once per frame and can be flushed', () => {
    const frames: Array<() => void> = []
    const fn = vi.fn()
    const throttle = frameThrottle(fn, (cb) => frames.push(cb))
    throttle.schedule()
    throttle.schedule()
    throttle.schedule()
    expect(frames).toHaveLength(1)
    frames[0]()
    expect(fn).toHaveBeenCalledTimes(1)
    throttle.schedule()
    throttle.flush()
    expect(fn).toHaveBeenCalledTimes(2)
    frames[1]() // the flushed frame does not run it again
    expect(fn).toHaveBeenCalledTimes(2)
  })
})

describe('shortTime', () => {
  const now = new Date(2026, 10, 28, 15, 0, 0).getTime()
  const iso = (ms: number) => new Date(ms).toISOString()
  it('is relative for recent times', () => {
    expect(shortTime(iso(now - 10_000), now, 'en')).toBe('just now')
    expect(shortTime(iso(now - 5 * 60_000), now, 'en')).toBe('5 min ago')
    expect(shortTime(iso(now - 5 * 60_000), now, 'zh')).toBe('5 分钟前')
    expect(shortTime(iso(now - 3 * 3_600_000), now, 'en')).toBe('3 h ago')
    expect(shortTime(iso(new Date(2026, 10, 27, 20).getTime()), now, 'en')).toBe('yesterday')
    expect(shortTime(iso(new Date(2026, 10, 24, 20).getTime()), now, 'en')).toBe('4 days ago')
  })
  it('is a date for older times, and empty for garbage', () => {
    expect(shortTime(iso(new Date(2026, 0, 5).getTime()), now, 'en')).toContain('Jan')
    expect(shortTime('nonsense', now, 'en')).toBe('')
  })
})
