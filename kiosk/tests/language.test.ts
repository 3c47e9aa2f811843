// Bilingual speech recognition, the page's side: it tells the daemon its language after hello and on every
// switch, asks to listen in the language of the switch or of the visitor's last question, and names the wake
// phrase of its own language.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { questionLanguage, setLanguage } from '../src/i18n'
import { parseServerFrame } from '../src/protocol'
import { FakeSocket } from './fakeSocket'
import { $, HELLO, flush, json, mount, type, unmount } from './harness'

const VOICE_ON = { ...HELLO.voice, available: true, detail: null }
const languageFrames = (socket: FakeSocket) =>
  socket.sent.filter((f) => (f as { type: string }).type === 'language')

beforeEach(() => {
  FakeSocket.instances = []
  vi.stubGlobal('WebSocket', FakeSocket)
  vi.stubGlobal('fetch', vi.fn(async () => json({ status: 'ready' })))
  setLanguage('en')
})
afterEach(() => {
  unmount()
  vi.unstubAllGlobals()
})

describe('the speech language', () => {
  it('judges a question Chinese when it has Han characters', () => {
    expect(questionLanguage('洗手间在哪里？')).toBe('zh')
    expect(questionLanguage('Where is the 图书馆?')).toBe('zh')
    expect(questionLanguage('Where are the toilets?')).toBe('en')
    expect(questionLanguage('버스 어디예요')).toBe('en')
  })

  it('is sent after hello and whenever the switch changes', async () => {
    setLanguage('zh')
    const socket = await mount({ ...HELLO, voice: VOICE_ON })
    expect(socket.sent).toEqual([{ type: 'language', lang: 'zh' }])
    setLanguage('en')
    await flush()
    expect(socket.sent.at(-1)).toEqual({ type: 'language', lang: 'en' })
    $('mic')!.click()
    expect(socket.sent.at(-1)).toEqual({ type: 'listen', on: true, lang: 'en' })
    socket.receive({ ...VOICE_ON, listening: true })
    await flush()
    $('mic')!.click()
    expect(socket.sent.at(-1)).toEqual({ type: 'listen', on: false })
  })

  it('follows the last question, typed or spoken, until the switch or a new visitor', async () => {
    const socket = await mount({ ...HELLO, voice: VOICE_ON })
    await type('洗手间在哪里？')
    socket.receive({ type: 'session', session: 's1' })
    socket.receive({ type: 'done', reason: 'stop', usage: {}, timings: {} })
    await flush()
    $('mic')!.click()
    expect(socket.sent.at(-1)).toEqual({ type: 'listen', on: true, lang: 'zh' })
    socket.receive({ ...VOICE_ON, listening: true })
    socket.receive({ type: 'transcript', text: 'where is the exit', final: true })
    socket.receive({ ...VOICE_ON, listening: false })
    socket.receive({ type: 'session', session: 's1' })
    socket.receive({ type: 'done', reason: 'stop', usage: {}, timings: {} })
    await flush()
    $('mic')!.click()
    expect(socket.sent.at(-1)).toEqual({ type: 'listen', on: true, lang: 'en' })
    socket.receive({ ...VOICE_ON, listening: false })
    await type('出口在哪里')
    socket.receive({ type: 'session', session: 's1' })
    socket.receive({ type: 'done', reason: 'stop', usage: {}, timings: {} })
    // The idle reset: the next visitor is spoken to in the page's language again.
    socket.receive({ type: 'reset', session: 's1', visit: 'v2' })
    await flush()
    expect(languageFrames(socket).at(-1)).toEqual({ type: 'language', lang: 'en' })
    expect(languageFrames(socket)).toHaveLength(2)
  })

  it('reconnecting tells the new connection the language', async () => {
    setLanguage('zh')
    const first = await mount({ ...HELLO, voice: VOICE_ON })
    first.drop()
    await new Promise((r) => setTimeout(r, 1200))
    const second = FakeSocket.latest
    expect(second).not.toBe(first)
    second.open()
    second.receive(HELLO)
    await flush()
    expect(second.sent).toEqual([{ type: 'language', lang: 'zh' }])
  })
})

describe('the wake phrase per language', () => {
  const hello = { ...HELLO, voice: { ...VOICE_ON, wake_phrase: 'hello kiosk' }, wake_phrase_zh: '你好小亭' }

  it('parses wake_phrase_zh, empty for older daemons', () => {
    expect(parseServerFrame(JSON.stringify(hello))).toMatchObject({ wakePhrase: 'hello kiosk', wakePhraseZh: '你好小亭' })
    expect(parseServerFrame(JSON.stringify(HELLO))).toMatchObject({ wakePhraseZh: '' })
  })

  it('the welcome screen names the phrase of its language, the one phrase when there is no Chinese one', async () => {
    await mount(hello)
    expect($('welcome-wake')!.textContent).toContain('hello kiosk')
    setLanguage('zh')
    await flush()
    expect($('welcome-wake')!.textContent).toContain('你好小亭')
    unmount()
    await mount({ ...hello, wake_phrase_zh: '' })
    expect($('welcome-wake')!.textContent).toContain('hello kiosk')
  })
})
