// The whole page in jsdom against a fake daemon: the test ids and flows the Playwright tests rely on.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { setLanguage } from '../src/i18n'
import { FakeSocket } from './fakeSocket'
import { $, $$, flush, json, mount as mountPage, type, unmount } from './harness'

const HELLO = {
  type: 'hello', model: 'm', ready: true, idle_reset: 120, max_question_chars: 4000,
  suggestions: ['What are the opening hours?'],
  voice: { type: 'voice', available: false, listening: false, speaking: false, speech: true, detail: 'voice is switched off' },
  visit: 'v1',
}

const fetchMock = vi.fn(async (url: string, init?: RequestInit): Promise<Response> => {
  if (url === '/readyz') return json({ status: 'ready' })
  const visit = (init?.headers as Record<string, string> | undefined)?.['X-Kioskd-Visit']
  if (url.startsWith('/api/sessions') && visit !== 'v1') return json({ error: { code: 'visit_required' } }, 403)
  if (url.startsWith('/api/sessions?')) {
    return json({ sessions: [{ id: 's1', title: 'Opening hours', created_at: new Date().toISOString(), updated_at: new Date().toISOString(), turn_count: 2 }] })
  }
  if (url === '/api/sessions/s1' && init?.method === 'DELETE') return json(null, 204)
  if (url === '/api/sessions/s1') {
    return json({ id: 's1', title: 'Opening hours', turns: [
      { seq: 1, role: 'user', content: 'When do you open?', status: 'complete' },
      { seq: 2, role: 'assistant', content: 'At **nine**. [map](javascript:alert(1))', status: 'interrupted' },
    ] })
  }
  return json({ error: { code: 'not_found' } }, 404)
})

const mount = (hello: object = HELLO) => mountPage(hello)

beforeEach(() => {
  FakeSocket.instances = []
  vi.stubGlobal('WebSocket', FakeSocket)
  vi.stubGlobal('fetch', fetchMock)
  setLanguage('en')
})
afterEach(() => {
  unmount()
  vi.unstubAllGlobals()
})

describe('the kiosk page', () => {
  it('connects, shows suggestions and answers a question as it streams', async () => {
    const socket = await mount()
    expect($('status')!.dataset.state).toBe('ready')
    expect($('app')!.dataset.session).toBe('')
    expect($('mic')!.dataset.state).toBe('unavailable')
    expect(($('mic') as HTMLButtonElement).disabled).toBe(true)
    expect($('mic')!.title).toContain('voice is switched off')
    expect($('speech-toggle')!.getAttribute('aria-pressed')).toBe('true')
    expect($('stop')).toBeNull()
    expect($$('suggestion').map((b) => b.textContent!.trim())).toEqual(['What are the opening hours?'])

    $$('suggestion')[0].click()
    await flush()
    expect(socket.sent).toEqual([{ type: 'language', lang: 'en' }, { type: 'chat', text: 'What are the opening hours?', session: null }])
    expect($('status')!.dataset.state).toBe('thinking')
    const [user, answer] = $$('message')
    expect(user.dataset).toMatchObject({ role: 'user', state: 'done' })
    expect(answer.dataset).toMatchObject({ role: 'assistant', state: 'streaming' })
    expect($('stop')).not.toBeNull()

    socket.receive({ type: 'session', session: 'abc' })
    socket.receive({ type: 'token', text: 'We open at **9' })
    socket.receive({ type: 'token', text: '** am.\n\n| a |\n|---|\n| 1 |\n' })
    await flush()
    const body = answer.querySelector('[data-testid="message-body"]')!
    expect(body.querySelector('strong')!.textContent).toBe('9')
    expect(body.querySelector('table')).not.toBeNull()
    expect($('app')!.dataset.session).toBe('abc')

    socket.receive({ type: 'done', reason: 'stop', usage: {}, timings: { tokens_per_s: 14.83 } })
    await flush()
    expect($$('message')[1].dataset.state).toBe('done')
    expect($('tokens-per-second')!.textContent).toContain('14.8')
    expect($('status')!.dataset.state).toBe('ready')
    expect($('stop')).toBeNull()
  })

  it('shows the place in line while the question waits, in both languages', async () => {
    const socket = await mount()
    await type('Where is the exit?')
    socket.receive({ type: 'session', session: 'abc' })
    socket.receive({ type: 'queued', position: 2 })
    await flush()
    expect($('queued')!.textContent).toBe('Waiting: 2 ahead')
    setLanguage('zh')
    socket.receive({ type: 'queued', position: 1 })
    await flush()
    expect($('queued')!.textContent).toBe('排队中：前面还有 1 位')
    socket.receive({ type: 'token', text: 'Left' })
    await flush()
    expect($('queued')).toBeNull()
  })

  it('sends on Enter but not during IME composition or with Shift', async () => {
    const socket = await mount()
    await type('你好', { isComposing: true })
    await type('你好', { keyCode: 229 })
    await type('你好', { shiftKey: true })
    expect(socket.sent).toEqual([{ type: 'language', lang: 'en' }]) // told after hello
    await type('你好')
    expect(socket.sent).toEqual([{ type: 'language', lang: 'en' }, { type: 'chat', text: '你好', session: null }])
    expect(($('composer-input') as HTMLTextAreaElement).value).toBe('')
  })

  it('stops an answer at once and shows it as stopped', async () => {
    const socket = await mount()
    await type('Tell me a story')
    socket.receive({ type: 'session', session: 's' })
    socket.receive({ type: 'token', text: 'Once' })
    await flush()
    $('stop')!.click()
    await flush()
    expect(socket.sent.at(-1)).toEqual({ type: 'cancel' })
    expect($('stop')).toBeNull()
    expect(document.querySelector('.md-streaming')).toBeNull() // no caret
    socket.receive({ type: 'done', reason: 'cancelled', usage: {}, timings: {} })
    await flush()
    expect($$('message')[1].dataset.state).toBe('cancelled')
    expect($$('message')[1].textContent).toContain('Stopped')
  })

  it('marks an answer lost when the connection drops, and reconnects', async () => {
    const socket = await mount()
    await type('Question')
    socket.receive({ type: 'session', session: 's' })
    socket.receive({ type: 'token', text: 'Half' })
    await flush()
    socket.drop(1001)
    await flush()
    expect($$('message')[1].dataset.state).toBe('lost')
    expect($$('message')[1].textContent).toContain('Half')
    expect($$('message')[1].textContent).toContain('Connection lost')
    expect($('status')!.dataset.state).toBe('reconnecting')
    expect($('status')!.textContent).toMatch(/Reconnecting in \d s/)
    expect(($('send') as HTMLButtonElement).disabled).toBe(true)
  })

  it('shows localized error notices and ignores unknown frames', async () => {
    const socket = await mount()
    socket.receive({ type: 'from_the_future', x: 1 })
    await type('Q')
    socket.receive({ type: 'session', session: 's' })
    socket.receive({ type: 'error', code: 'busy', message: 'full', retry_after: 3 })
    await flush()
    expect($('notice')!.textContent).toContain('The kiosk is busy — try again in 3 s')
    expect($$('message')[1].dataset.state).toBe('error')
    $('lang-toggle')!.click()
    await flush()
    expect(document.documentElement.lang).toBe('zh')
    expect($('lang-toggle')!.textContent!.trim()).toBe('English')
    expect($('notice')!.textContent).toContain('3 秒')
  })

  it('new customer and the idle reset clear the screen', async () => {
    const socket = await mount()
    await type('Q')
    socket.receive({ type: 'session', session: 's' })
    await flush()
    $('new-customer')!.click()
    await flush()
    expect(socket.sent.slice(-2)).toEqual([{ type: 'cancel' }, { type: 'new_visit' }])
    expect($$('message')).toHaveLength(0)
    expect($('app')!.dataset.session).toBe('')
    socket.receive({ type: 'done', reason: 'cancelled', usage: {}, timings: {} })
    await type('Next')
    socket.receive({ type: 'session', session: 't' })
    socket.receive({ type: 'done', reason: 'stop', usage: {}, timings: {} })
    await flush()
    socket.receive({ type: 'reset', reason: 'idle', session: 't' })
    await flush()
    expect($$('message')).toHaveLength(0)
    expect(socket.sent.at(-1)).toEqual({ type: 'chat', text: 'Next', session: null })
    expect($('welcome')).not.toBeNull() // the next visitor is welcomed
  })

  it('voice: partial transcript, final question, speaking status', async () => {
    const socket = await mount()
    socket.receive({ type: 'voice', available: true, listening: false, speaking: false, speech: true, detail: null })
    await flush()
    expect($('mic')!.dataset.state).toBe('idle')
    $('mic')!.click()
    expect(socket.sent.at(-1)).toEqual({ type: 'listen', on: true, lang: 'en' })
    socket.receive({ type: 'voice', available: true, listening: true, speaking: false, speech: true, detail: null })
    socket.receive({ type: 'transcript', text: 'what time', final: false })
    await flush()
    expect($('mic')!.dataset.state).toBe('listening')
    expect($('partial-transcript')!.textContent).toContain('what time')
    socket.receive({ type: 'transcript', text: 'what time is it', final: true })
    expect(socket.sent.at(-1)).toEqual({ type: 'chat', text: 'what time is it', session: null })
    socket.receive({ type: 'voice', available: true, listening: false, speaking: true, speech: true, detail: null })
    socket.receive({ type: 'speaking', state: 'started', text: 'It is ten.' })
    await flush()
    expect($('partial-transcript')).toBeNull()
    expect($$('message')[0].textContent).toContain('what time is it')
    expect($('status')!.dataset.state).toBe('speaking')
    $('speech-toggle')!.click()
    expect(socket.sent.at(-1)).toEqual({ type: 'speech', on: false })
  })

  it('history: lists, switches to and deletes a session', async () => {
    const socket = await mount()
    expect($('history-panel')).toBeNull()
    $('history-toggle')!.click()
    await flush()
    expect($('history-panel')).not.toBeNull()
    const item = $('session-item')!
    expect(item.dataset.sessionId).toBe('s1')
    item.click()
    await flush()
    expect($('app')!.dataset.session).toBe('s1')
    const messages = $$('message')
    expect(messages.map((m) => m.dataset.state)).toEqual(['done', 'interrupted'])
    expect(messages[1].querySelector('strong')!.textContent).toBe('nine')
    expect(messages[1].querySelector('a, [href]')).toBeNull()
    await type('And on Sunday?')
    expect(socket.sent.at(-1)).toEqual({ type: 'chat', text: 'And on Sunday?', session: 's1' })
    socket.receive({ type: 'session', session: 's1' })
    socket.receive({ type: 'done', reason: 'stop', usage: {}, timings: {} })
    await flush()

    if (!$('history-panel')) $('history-toggle')!.click()
    await flush()
    $('session-delete')!.click()
    await flush()
    expect($('session-delete')).toBeNull()
    $('session-delete-confirm')!.click()
    await flush()
    expect(fetchMock).toHaveBeenCalledWith('/api/sessions/s1', expect.objectContaining({ method: 'DELETE' }))
    expect($('app')!.dataset.session).toBe('')
    expect($$('message')).toHaveLength(0)
  })

  it('shows the venue sections under a finished answer, in both languages, and nothing without them', async () => {
    const socket = await mount()
    await type('When do you open, and what does it cost?')
    socket.receive({ type: 'session', session: 's' })
    socket.receive({ type: 'token', text: 'From 9:00; entry is free.' })
    await flush()
    expect($('sources')).toBeNull() // only the done frame says where the answer came from
    socket.receive({
      type: 'done', reason: 'stop', usage: {}, timings: {}, knowledge: 'grounded',
      sources: [{ file: 'hours.md', title: 'Opening hours' }, { file: 'prices.md', title: 'Prices' },
        { file: 'hours.md', title: 'Opening hours' }, { file: 'x.md', title: 42 }],
    })
    await flush()
    const answer = $$('message')[1]
    expect(answer.dataset).toMatchObject({ state: 'done', knowledge: 'grounded' })
    expect(answer.querySelector('[data-testid="sources"]')!.textContent).toBe('From: Opening hours · Prices')
    expect(answer.classList.contains('msg-fallback')).toBe(false)
    setLanguage('zh')
    await flush()
    expect($('sources')!.textContent).toBe('来源：Opening hours · Prices')
    setLanguage('en')

    await type('Write a poem about autumn')
    socket.receive({ type: 'session', session: 's' })
    socket.receive({ type: 'token', text: 'Leaves fall.' })
    socket.receive({ type: 'done', reason: 'stop', usage: {}, timings: {}, knowledge: 'ordinary', sources: [] })
    await type('And one more')
    socket.receive({ type: 'session', session: 's' })
    socket.receive({ type: 'token', text: 'Snow.' })
    socket.receive({ type: 'done', reason: 'stop', usage: {}, timings: {} }) // an older daemon
    await flush()
    const answers = $$('message').filter((m) => m.dataset.role === 'assistant')
    expect(answers.map((m) => m.dataset.knowledge)).toEqual(['grounded', 'ordinary', 'ordinary'])
    expect(answers.map((m) => m.querySelector('[data-testid="sources"]') !== null)).toEqual([true, false, false])
  })

  it('a retracted answer leaves the screen and the fallback takes its place', async () => {
    const socket = await mount()
    const answer = () => $$('message').filter((m) => m.dataset.role === 'assistant').at(-1)!
    const body = () => answer().querySelector('[data-testid="message-body"]')!.textContent!.trim()
    const FALLBACK = "I don't have that information. Please ask at the front desk."
    // The retract arrives on its own, or in the same moment as the replacement (the view then starts over
    // instead of keeping the withdrawn paragraphs it had already rendered).
    for (const together of [false, true]) {
      await type('Is there a rooftop pool?')
      socket.receive({ type: 'session', session: 's' })
      socket.receive({ type: 'token', text: 'Yes, the **rooftop pool** opens at 7.\n\n' })
      socket.receive({ type: 'token', text: 'It is heated.\n' })
      await flush()
      expect(body()).toContain('rooftop pool')
      socket.receive({ type: 'retract' })
      if (!together) {
        await flush()
        expect(answer().dataset.state).toBe('streaming')
        expect(body()).toBe('')
      }
      socket.receive({ type: 'token', text: "I don't have that information. " })
      socket.receive({ type: 'token', text: 'Please ask at the front desk.' })
      await flush()
      expect(document.body.textContent).not.toContain('opens at 7')
      expect(document.body.textContent).not.toContain('heated')
      socket.receive({ type: 'done', reason: 'stop', usage: {}, timings: {}, knowledge: 'fallback', sources: [] })
      await flush()
      expect(body()).toBe(FALLBACK)
      expect(answer().dataset).toMatchObject({ state: 'done', knowledge: 'fallback' })
      expect(answer().classList.contains('msg-fallback')).toBe(true)
      expect($('sources')).toBeNull()
      expect(document.body.textContent).not.toContain('opens at 7')
      expect(document.body.textContent).not.toContain('heated')
    }
  })

  it('shows loading while the model loads, polling /readyz until ready', async () => {
    fetchMock.mockClear()
    await mount({ ...HELLO, ready: false })
    await flush()
    expect(fetchMock).toHaveBeenCalledWith('/readyz', expect.anything())
    expect($('status')!.dataset.state).toBe('ready')
  })

  it('the idle reset also closes the history drawer', async () => {
    const socket = await mount()
    $('history-toggle')!.click()
    await flush()
    expect($('history-panel')).not.toBeNull()
    socket.receive({ type: 'reset', reason: 'idle', session: 's1' })
    await flush()
    // The drawer leaves through a <Transition>, which ends a frame or two later (not within one flush).
    await vi.waitFor(() => expect($('history-panel')).toBeNull())
  })
})
