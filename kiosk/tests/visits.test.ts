// Visits and privacy on the screen: whose conversations the drawer lists, New customer and the idle reset,
// history_mode "off", and the operator unlock.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { setLanguage } from '../src/i18n'
import { parseServerFrame } from '../src/protocol'
import { FakeSocket } from './fakeSocket'
import { $, $$, HELLO, answer, flush, headerOf, json, mount, type, unmount } from './harness'

const summary = (id: string, title: string) => ({
  id, title, created_at: new Date().toISOString(), updated_at: new Date().toISOString(), turn_count: 2,
})
// What each visit (and the operator) may see, as the daemon answers it.
const LISTS: Record<string, unknown[]> = {
  v1: [summary('a1', 'Visitor A asked')],
  v2: [],
  operator: [summary('a1', 'Visitor A asked'), summary('old', 'An older visit')],
}

let unlockReplies: Response[] = []

const fetchMock = vi.fn(async (url: string, init?: RequestInit): Promise<Response> => {
  if (url === '/api/operator/unlock') return unlockReplies.shift() ?? json({ error: { code: 'wrong_pin' } }, 403)
  if (url === '/api/operator/lock') return json(null, 204)
  const operator = headerOf(init, 'X-Kioskd-Operator')
  const visit = headerOf(init, 'X-Kioskd-Visit')
  const who = operator === 'op-token' ? 'operator' : visit
  if (who === undefined || !(who in LISTS)) return json({ error: { code: 'visit_required' } }, 403)
  if (url.startsWith('/api/sessions?')) return json({ sessions: LISTS[who] })
  return json({ error: { code: 'not_found' } }, 404)
})

const sessionCalls = () => fetchMock.mock.calls.filter(([url]) => String(url).startsWith('/api/sessions'))
const titles = () => $$('session-item').map((item) => item.textContent ?? '')

async function openDrawer(): Promise<void> {
  if (!$('history-panel')) $('history-toggle')!.click()
  await flush()
}

beforeEach(() => {
  FakeSocket.instances = []
  fetchMock.mockClear()
  unlockReplies = []
  vi.stubGlobal('WebSocket', FakeSocket)
  vi.stubGlobal('fetch', fetchMock)
  setLanguage('en')
})
afterEach(() => {
  unmount()
  vi.unstubAllGlobals()
  vi.useRealTimers()
})

describe('the hello frame and visit frames', () => {
  it('parses the visit, history mode, operator unlock, keyboard mode and venue texts', () => {
    const hello = parseServerFrame(JSON.stringify({
      ...HELLO, history_mode: 'off', operator_unlock: true, onscreen_keyboard: 'always', venue_name: ' City Library ',
      welcome_en: 'Hello', welcome_zh: '你好', voice: { ...HELLO.voice, wake_phrase: 'hey kiosk' },
    }))
    expect(hello).toMatchObject({
      visit: 'v1', historyMode: 'off', operatorUnlock: true, onscreenKeyboard: 'always', venueName: 'City Library',
      welcomeEn: 'Hello', welcomeZh: '你好', wakePhrase: 'hey kiosk',
    })
  })

  it('gives older daemons safe defaults and strange values the strictest reading', () => {
    const { visit: _v, history_mode: _h, operator_unlock: _o, onscreen_keyboard: _k, ...old } = HELLO
    expect(parseServerFrame(JSON.stringify(old))).toMatchObject({
      visit: null, historyMode: 'keep', operatorUnlock: false, onscreenKeyboard: 'auto', venueName: '', wakePhrase: '',
    })
    expect(parseServerFrame(JSON.stringify({ ...HELLO, history_mode: 'forever', onscreen_keyboard: 9 })))
      .toMatchObject({ historyMode: 'off', onscreenKeyboard: 'auto' })
  })

  it('reads the new visit from visit and reset frames', () => {
    expect(parseServerFrame('{"type":"visit","visit":"v2"}')).toEqual({ type: 'visit', visit: 'v2' })
    expect(parseServerFrame('{"type":"reset","session":"s","visit":"v3"}'))
      .toEqual({ type: 'reset', session: 's', visit: 'v3' })
    expect(parseServerFrame('{"type":"reset","session":"s"}')).toEqual({ type: 'reset', session: 's', visit: null })
  })
})

describe('visits', () => {
  it('sends the visit token with every history request', async () => {
    await mount()
    await openDrawer()
    expect(titles()).toEqual([expect.stringContaining('Visitor A asked')])
    expect(sessionCalls().every(([, init]) => headerOf(init, 'X-Kioskd-Visit') === 'v1')).toBe(true)
    expect($('history-scope')!.textContent).toContain('this visit')
  })

  it('New customer ends the visit: nothing of the earlier visit is listed, before or after the new token', async () => {
    const socket = await mount()
    await type('Where is the toilet?')
    await answer(socket, 'a1')
    await openDrawer()
    expect($$('session-item')).toHaveLength(1)
    $('new-customer')!.click()
    await flush()
    expect(socket.sent.at(-1)).toEqual({ type: 'new_visit' })
    expect($$('message')).toHaveLength(0)
    await vi.waitFor(() => expect($('history-panel')).toBeNull())
    const before = sessionCalls().length
    await openDrawer()
    expect($$('session-item')).toHaveLength(0) // no token yet: nothing asked, nothing shown
    expect(sessionCalls()).toHaveLength(before)
    socket.receive({ type: 'visit', visit: 'v2' })
    await flush()
    expect(headerOf(sessionCalls().at(-1)![1], 'X-Kioskd-Visit')).toBe('v2')
    expect($$('session-item')).toHaveLength(0)
    expect($('history-empty')).not.toBeNull()
  })

  it('the idle reset starts a new visit with the token it brings', async () => {
    const socket = await mount()
    socket.receive({ type: 'reset', reason: 'idle', session: 'a1', visit: 'v2' })
    await flush()
    await openDrawer()
    expect(headerOf(sessionCalls().at(-1)![1], 'X-Kioskd-Visit')).toBe('v2')
    expect($$('session-item')).toHaveLength(0)
  })

  it('history_mode "off": the drawer lists this visit from page memory and forgets it at a new visit', async () => {
    const socket = await mount({ ...HELLO, history_mode: 'off' })
    await type('First question')
    await answer(socket, 'm1', 'First answer.')
    await openDrawer()
    expect(titles()).toEqual([expect.stringContaining('First question')])
    $('new-session')!.click()
    await flush()
    expect($$('message')).toHaveLength(0)
    await openDrawer()
    $('session-item')!.click()
    await flush()
    expect($$('message').map((m) => m.textContent)).toEqual([
      expect.stringContaining('First question'), expect.stringContaining('First answer.'),
    ])
    expect(sessionCalls()).toHaveLength(0) // the daemon keeps nothing: never asked
    $('new-customer')!.click()
    await vi.waitFor(() => expect($('history-panel')).toBeNull())
    await openDrawer()
    expect($$('session-item')).toHaveLength(0)
    expect($('history-scope')!.textContent).toContain('Nothing is stored')
  })
})

describe('operator unlock', () => {
  const press = async (digits: string) => {
    for (const d of digits) document.querySelector<HTMLElement>(`[data-testid="pin-digit"][data-digit="${d}"]`)!.click()
    await flush()
    $('pin-ok')!.click()
    await flush()
  }

  it('is not offered without an operator PIN', async () => {
    await mount()
    await openDrawer()
    expect($('operator-unlock')).toBeNull()
  })

  it('shows attempts left, then the lockout countdown', async () => {
    await mount({ ...HELLO, operator_unlock: true })
    await openDrawer()
    $('operator-unlock')!.click()
    await flush()
    expect($('pin-pad')).not.toBeNull()
    expect($$('pin-digit')).toHaveLength(10)
    unlockReplies = [
      json({ error: { code: 'wrong_pin', attempts_left: 2 } }, 403),
      json({ error: { code: 'locked_out' } }, 429, { 'Retry-After': '30' }),
    ]
    await press('1111')
    const [url, init] = fetchMock.mock.calls.find(([u]) => u === '/api/operator/unlock')!
    expect(url).toBe('/api/operator/unlock')
    expect(JSON.parse(String(init!.body))).toEqual({ pin: '1111' })
    expect($('pin-message')!.textContent).toContain('2 attempts left')
    await press('2222')
    expect($('pin-message')!.textContent).toContain('Try again in 30 s')
    expect(($$('pin-digit')[0] as HTMLButtonElement).disabled).toBe(true)
  })

  it('lists the whole archive with the operator token until Lock', async () => {
    await mount({ ...HELLO, operator_unlock: true })
    await openDrawer()
    $('operator-unlock')!.click()
    await flush()
    unlockReplies = [json({ operator: 'op-token', expires_in: 300 })]
    await press('2468')
    expect($('pin-pad')).toBeNull()
    expect($('operator-banner')).not.toBeNull()
    expect(headerOf(sessionCalls().at(-1)![1], 'X-Kioskd-Operator')).toBe('op-token')
    expect(titles()).toHaveLength(2)
    $('operator-lock')!.click()
    await flush()
    const lock = fetchMock.mock.calls.find(([u]) => u === '/api/operator/lock')!
    expect(headerOf(lock[1], 'X-Kioskd-Operator')).toBe('op-token')
    expect($('operator-banner')).toBeNull()
    expect(titles()).toHaveLength(1)
  })

  it('a new visit locks again', async () => {
    const socket = await mount({ ...HELLO, operator_unlock: true })
    await openDrawer()
    $('operator-unlock')!.click()
    await flush()
    unlockReplies = [json({ operator: 'op-token', expires_in: 300 })]
    await press('2468')
    expect($('operator-banner')).not.toBeNull()
    socket.receive({ type: 'reset', reason: 'idle', session: 'x', visit: 'v2' })
    await flush()
    expect(fetchMock.mock.calls.some(([u]) => u === '/api/operator/lock')).toBe(true)
    await vi.waitFor(() => expect($('history-panel')).toBeNull()) // the reset closed it
    await openDrawer()
    expect($('operator-banner')).toBeNull()
    expect(headerOf(sessionCalls().at(-1)![1], 'X-Kioskd-Visit')).toBe('v2')
  })
})
