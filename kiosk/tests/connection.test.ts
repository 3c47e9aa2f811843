import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { connect, type LinkStatus } from '../src/net/connection'
import { FakeSocket } from './fakeSocket'

describe('connect', () => {
  beforeEach(() => {
    vi.useFakeTimers()
    FakeSocket.instances = []
  })
  afterEach(() => vi.useRealTimers())

  function start() {
    const statuses: LinkStatus[] = []
    const frames: string[] = []
    const events: string[] = []
    const conn = connect({
      url: 'ws://kiosk/ws',
      onFrame: (d) => frames.push(d),
      onOpen: () => events.push('open'),
      onClose: (code) => events.push(`close ${code}`),
      onStatus: (s) => statuses.push(s),
      createSocket: (url) => new FakeSocket(url) as unknown as WebSocket,
      random: () => 0.5,
    })
    return { conn, statuses, frames, events }
  }

  it('reconnects with growing delays and resets them after a good open', () => {
    const { statuses, events } = start()
    expect(FakeSocket.instances).toHaveLength(1)
    FakeSocket.latest.drop() // never opened: the daemon is down
    expect(statuses.at(-1)).toMatchObject({ phase: 'waiting', failures: 1 })
    vi.advanceTimersByTime(499)
    expect(FakeSocket.instances).toHaveLength(1)
    vi.advanceTimersByTime(1)
    expect(FakeSocket.instances).toHaveLength(2)
    FakeSocket.latest.drop()
    vi.advanceTimersByTime(999)
    expect(FakeSocket.instances).toHaveLength(2)
    vi.advanceTimersByTime(1)
    expect(FakeSocket.instances).toHaveLength(3)
    FakeSocket.latest.open()
    expect(statuses.at(-1)).toMatchObject({ phase: 'open', failures: 0, everOpened: true })
    FakeSocket.latest.drop(1001) // daemon shutting down
    expect(events).toEqual(['open', 'close 1001'])
    vi.advanceTimersByTime(500)
    expect(FakeSocket.instances).toHaveLength(4)
  })

  it('sends only while open, and passes frames on', () => {
    const { conn, frames } = start()
    expect(conn.send({ type: 'cancel' })).toBe(false)
    FakeSocket.latest.open()
    expect(conn.send({ type: 'cancel' })).toBe(true)
    expect(FakeSocket.latest.sent).toEqual([{ type: 'cancel' }])
    FakeSocket.latest.receive({ type: 'token', text: 'a' })
    expect(frames).toEqual(['{"type":"token","text":"a"}'])
  })

  it('retries at once when asked, and stops for good when closed', () => {
    const { conn } = start()
    FakeSocket.latest.drop()
    conn.retryNow()
    expect(FakeSocket.instances).toHaveLength(2)
    conn.close()
    vi.advanceTimersByTime(60_000)
    expect(FakeSocket.instances).toHaveLength(2)
  })
})
