import { beforeEach, describe, expect, it } from 'vitest'
import { applyFrame } from '../src/chat/frames'
import * as chat from '../src/chat/store'
import { createChatState, type ChatMessage, type ChatState } from '../src/chat/types'
import { parseServerFrame, type ClientFrame } from '../src/protocol'

/** Feeds one raw server frame (as JSON) through the parser and the reducer. */
function recv(state: ChatState, frame: object): ClientFrame[] {
  const parsed = parseServerFrame(JSON.stringify(frame))
  return parsed ? applyFrame(state, parsed) : []
}

function messages(state: ChatState): ChatMessage[] {
  return state.items.filter((i): i is ChatMessage => i.kind === 'message')
}

function last(state: ChatState): ChatMessage {
  const list = messages(state)
  return list[list.length - 1]
}

const HELLO = {
  type: 'hello', model: 'm', ready: true, idle_reset: 120, max_question_chars: 300,
  suggestions: ['Opening hours?', 7, ''], voice: { type: 'voice', available: false, speech: true, detail: 'off' },
}
const DONE = { type: 'done', reason: 'stop', usage: {}, timings: { tokens_per_s: 14.83 } }

let state: ChatState
beforeEach(() => {
  state = createChatState()
  chat.connectionOpened(state)
  recv(state, HELLO)
})

describe('hello', () => {
  it('takes the settings, keeping only usable suggestions', () => {
    expect(state.ready).toBe(true)
    expect(state.maxQuestionChars).toBe(300)
    expect(state.suggestions).toEqual(['Opening hours?'])
    expect(state.voice).toMatchObject({ available: false, speech: true, detail: 'off' })
  })
})

describe('asking and streaming', () => {
  it('sends a chat with no session, then accumulates tokens', () => {
    expect(chat.ask(state, '  Where is the pharmacy?  ')).toEqual([
      { type: 'chat', text: 'Where is the pharmacy?', session: null },
    ])
    expect(messages(state).map((m) => [m.role, m.state])).toEqual([['user', 'done'], ['assistant', 'streaming']])
    recv(state, { type: 'session', session: 'abc' })
    recv(state, { type: 'token', text: 'The ' })
    recv(state, { type: 'token', text: 'nearest' })
    expect(last(state).text).toBe('The nearest')
    expect(state.session).toBe('abc')
    expect(chat.isAnswering(state)).toBe(true)
    recv(state, DONE)
    expect(last(state).state).toBe('done')
    expect(state.lastTokensPerSecond).toBeCloseTo(14.83)
    expect(chat.isAnswering(state)).toBe(false)
  })

  it('continues the session for the next question', () => {
    chat.ask(state, 'one')
    recv(state, { type: 'session', session: 'abc' })
    recv(state, DONE)
    expect(chat.ask(state, 'two')).toEqual([{ type: 'chat', text: 'two', session: 'abc' }])
  })

  it('refuses a second question while an answer is written, and empty questions', () => {
    chat.ask(state, 'one')
    expect(chat.ask(state, 'two')).toEqual([])
    expect(chat.ask(createChatState(), 'not connected')).toEqual([])
    recv(state, DONE)
    expect(chat.ask(state, '   ')).toEqual([])
  })

  it('keeps the place in line while the question waits, and drops it when the answer starts', () => {
    chat.ask(state, 'q')
    recv(state, { type: 'session', session: 's' })
    recv(state, { type: 'queued', position: 2 })
    expect(last(state)).toMatchObject({ state: 'streaming', text: '', queuePosition: 2 })
    recv(state, { type: 'queued', position: 1 })
    expect(last(state).queuePosition).toBe(1)
    recv(state, { type: 'token', text: 'Hi' })
    expect(last(state).queuePosition).toBeUndefined()
    recv(state, { type: 'queued', position: 3 }) // never sent by the daemon after a token; harmless
    recv(state, DONE)
    expect(last(state)).toMatchObject({ state: 'done', text: 'Hi' })
  })

  it('ignores a place in line with no question asked', () => {
    recv(state, { type: 'queued', position: 1 })
    expect(messages(state)).toEqual([])
  })

  it('marks an answer cut by the length limit', () => {
    chat.ask(state, 'q')
    recv(state, { ...DONE, reason: 'length' })
    expect(last(state)).toMatchObject({ state: 'done', cut: true })
  })
})

describe('stop', () => {
  it('sends cancel once, hides the caret at once and ends as cancelled', () => {
    chat.ask(state, 'q')
    recv(state, { type: 'session', session: 's' })
    recv(state, { type: 'token', text: 'Part' })
    expect(chat.cancel(state)).toEqual([{ type: 'cancel' }])
    expect(chat.cancel(state)).toEqual([])
    expect(last(state)).toMatchObject({ state: 'streaming', stopping: true })
    expect(chat.canStop(state)).toBe(false)
    recv(state, { type: 'token', text: ' late' })
    expect(last(state).text).toBe('Part')
    recv(state, { ...DONE, reason: 'cancelled' })
    expect(last(state)).toMatchObject({ state: 'cancelled', text: 'Part', stopping: false })
  })

  it('does nothing without an answer', () => {
    expect(chat.cancel(state)).toEqual([])
  })
})

describe('connection loss', () => {
  it('keeps the partial answer and marks it lost', () => {
    chat.ask(state, 'q')
    recv(state, { type: 'session', session: 's' })
    recv(state, { type: 'token', text: 'Half an ans' })
    chat.connectionLost(state)
    expect(last(state)).toMatchObject({ state: 'lost', text: 'Half an ans' })
    expect(state.connected).toBe(false)
    expect(state.flight).toBeNull()
    expect(chat.canAsk(state)).toBe(false)
    expect(state.session).toBe('s') // the conversation goes on after reconnecting
  })

  it('marks an answer still waiting for its first token lost too', () => {
    chat.ask(state, 'q')
    chat.connectionLost(state)
    expect(last(state).state).toBe('lost')
  })
})

describe('clearing the screen', () => {
  it('idle reset clears without cancelling on the daemon', () => {
    chat.ask(state, 'q')
    recv(state, { type: 'session', session: 's' })
    recv(state, DONE)
    expect(recv(state, { type: 'reset', reason: 'idle', session: 's' })).toEqual([])
    expect(state.items).toEqual([])
    expect(state.session).toBeNull()
    expect(chat.ask(state, 'next')).toEqual([{ type: 'chat', text: 'next', session: null }])
  })

  it('new customer cancels the running answer and swallows its remaining frames', () => {
    chat.ask(state, 'q')
    recv(state, { type: 'session', session: 's' })
    recv(state, { type: 'token', text: 'x' })
    expect(chat.clearConversation(state)).toEqual([{ type: 'cancel' }])
    expect(state.items).toEqual([])
    expect(chat.isAnswering(state)).toBe(false)
    recv(state, { type: 'token', text: 'late' })
    recv(state, { ...DONE, reason: 'cancelled' })
    expect(state.items).toEqual([])
    expect(state.session).toBeNull()
  })

  it('a question asked before the cancelled answer ended is sent once it ends', () => {
    chat.ask(state, 'q')
    chat.clearConversation(state)
    expect(chat.ask(state, 'new visitor')).toEqual([])
    expect(last(state).state).toBe('streaming')
    recv(state, { type: 'session', session: 'old' }) // the old answer's frames still arrive
    expect(state.session).toBeNull()
    expect(recv(state, { ...DONE, reason: 'cancelled' })).toEqual([
      { type: 'chat', text: 'new visitor', session: null },
    ])
    recv(state, { type: 'session', session: 'new' })
    recv(state, { type: 'token', text: 'Hi' })
    expect(last(state).text).toBe('Hi')
    expect(state.session).toBe('new')
  })

  it('shows a stored session and continues it', () => {
    chat.showStoredSession(state, 'old', [
      { role: 'user', content: 'q1', status: 'complete' },
      { role: 'assistant', content: 'a1', status: 'interrupted' },
    ])
    expect(messages(state).map((m) => [m.role, m.text, m.state])).toEqual([
      ['user', 'q1', 'done'], ['assistant', 'a1', 'interrupted'],
    ])
    expect(chat.ask(state, 'q2')).toEqual([{ type: 'chat', text: 'q2', session: 'old' }])
  })
})

describe('errors', () => {
  it('busy ends the answer with a notice carrying the retry delay', () => {
    chat.ask(state, 'q')
    recv(state, { type: 'session', session: 's' })
    recv(state, { type: 'error', code: 'busy', message: 'full', retry_after: 2 })
    expect(last(state)).toMatchObject({ state: 'error', notice: { code: 'busy', retryAfter: 2 } })
    expect(chat.canAsk(state)).toBe(true)
  })

  it('unknown_session forgets the session and re-sends the same question once', () => {
    chat.showStoredSession(state, 'gone', [{ role: 'user', content: 'q0', status: 'complete' }])
    chat.ask(state, 'again')
    expect(recv(state, { type: 'error', code: 'unknown_session', message: '' })).toEqual([
      { type: 'chat', text: 'again', session: null },
    ])
    expect(state.session).toBeNull()
    expect(last(state).state).toBe('streaming')
    recv(state, { type: 'session', session: 'fresh' })
    recv(state, DONE)
    expect(state.session).toBe('fresh')
  })

  it('a second unknown_session is shown, not retried again', () => {
    chat.showStoredSession(state, 'gone', [])
    chat.ask(state, 'again')
    recv(state, { type: 'error', code: 'unknown_session', message: '' })
    expect(recv(state, { type: 'error', code: 'unknown_session', message: '' })).toEqual([])
    expect(last(state)).toMatchObject({ state: 'error', notice: { code: 'unknown_session' } })
  })

  it('model_loading marks the model as not ready', () => {
    chat.ask(state, 'q')
    recv(state, { type: 'session', session: 's' })
    recv(state, { type: 'error', code: 'model_loading', message: '' })
    expect(state.ready).toBe(false)
    expect(last(state).state).toBe('error')
  })

  it('upstream_unavailable marks the model as not ready; upstream_lost does not', () => {
    chat.ask(state, 'q')
    recv(state, { type: 'session', session: 's' })
    recv(state, { type: 'error', code: 'upstream_lost', message: '' })
    expect(state.ready).not.toBe(false)
    chat.ask(state, 'again')
    recv(state, { type: 'session', session: 's' })
    recv(state, { type: 'error', code: 'upstream_unavailable', message: '' })
    expect(state.ready).toBe(false)
    expect(last(state).state).toBe('error')
  })

  it('a refusal after the session frame does not end the running answer', () => {
    chat.ask(state, 'q')
    recv(state, { type: 'session', session: 's' })
    recv(state, { type: 'error', code: 'generation_in_progress', message: '' })
    expect(last(state).state).toBe('streaming')
    expect(state.items[state.items.length - 1]).toMatchObject({ kind: 'notice', notice: { code: 'generation_in_progress' } })
  })

  it('voice_unavailable is a notice of its own, even while answering', () => {
    chat.ask(state, 'q')
    recv(state, { type: 'error', code: 'voice_unavailable', message: 'voice is switched off' })
    expect(last(state).state).toBe('streaming')
    expect(state.items[state.items.length - 1]).toMatchObject({ kind: 'notice', notice: { code: 'voice_unavailable' } })
  })

  it('an error with no answer running is a notice', () => {
    recv(state, { type: 'error', code: 'engine_error', message: 'boom' })
    expect(state.items).toEqual([{ kind: 'notice', id: expect.any(Number), notice: { code: 'engine_error', retryAfter: null, detail: 'boom' } }])
  })
})

describe('voice', () => {
  it('tracks the voice state and speaking', () => {
    recv(state, { type: 'voice', available: true, listening: true, speaking: false, speech: false, detail: null })
    expect(state.voice).toEqual({ available: true, listening: true, speaking: false, speech: false, detail: null })
    expect(chat.canAsk(state)).toBe(false) // typing and talking at once would race
    recv(state, { type: 'speaking', state: 'started', text: 'Hello.' })
    expect(state.speakingSentence).toBe('Hello.')
    expect(state.voice.speaking).toBe(false) // only `voice` frames say whether the kiosk speaks
    recv(state, { type: 'speaking', state: 'finished', text: 'Hello.' })
    expect(state.speakingSentence).toBe(null)
  })

  it('shows partial transcripts, and a final one is asked like a typed question', () => {
    recv(state, { type: 'transcript', text: 'what time', final: false })
    expect(state.partialTranscript).toBe('what time')
    expect(recv(state, { type: 'transcript', text: 'what time is it', final: true })).toEqual([
      { type: 'chat', text: 'what time is it', session: null },
    ])
    expect(state.partialTranscript).toBe('')
    expect(messages(state).map((m) => [m.role, m.text, m.state])).toEqual([
      ['user', 'what time is it', 'done'], ['assistant', '', 'streaming'],
    ])
    recv(state, { type: 'session', session: 'v' })
    recv(state, { type: 'token', text: 'Ten.' })
    recv(state, DONE)
    expect(last(state)).toMatchObject({ text: 'Ten.', state: 'done' })
    expect(state.session).toBe('v')
  })

  it('a spoken question during an answer stops it, then is asked in the same session', () => {
    chat.ask(state, 'first')
    recv(state, { type: 'session', session: 's1' })
    recv(state, { type: 'token', text: 'Part' })
    expect(recv(state, { type: 'transcript', text: 'second', final: true })).toEqual([{ type: 'cancel' }])
    expect(recv(state, { ...DONE, reason: 'cancelled' })).toEqual([{ type: 'chat', text: 'second', session: 's1' }])
    expect(messages(state).map((m) => [m.role, m.text, m.state])).toEqual([
      ['user', 'first', 'done'], ['assistant', 'Part', 'cancelled'],
      ['user', 'second', 'done'], ['assistant', '', 'streaming'],
    ])
  })

  it('an empty final transcript asks nothing', () => {
    recv(state, { type: 'transcript', text: 'um', final: false })
    recv(state, { type: 'transcript', text: '  ', final: true })
    expect(state.items).toEqual([])
    expect(state.partialTranscript).toBe('')
  })
})

describe('forward compatibility', () => {
  it('ignores unknown frame types and malformed frames', () => {
    const before = JSON.stringify(state)
    expect(parseServerFrame('{"type":"weather","sunny":true}')).toBeNull()
    expect(parseServerFrame('not json')).toBeNull()
    expect(parseServerFrame('[1,2]')).toBeNull()
    expect(parseServerFrame('{"type":"toString"}')).toBeNull()
    expect(JSON.stringify(state)).toBe(before)
  })

  it('shows an answer it did not ask for (e.g. started by voice)', () => {
    recv(state, { type: 'session', session: 'x' })
    recv(state, { type: 'token', text: 'Hi' })
    expect(last(state)).toMatchObject({ role: 'assistant', text: 'Hi', state: 'streaming' })
    recv(state, DONE)
    expect(last(state).state).toBe('done')
  })

  it('ignores stray tokens and done frames', () => {
    recv(state, { type: 'token', text: 'stray' })
    recv(state, DONE)
    expect(state.items).toEqual([])
  })
})

describe('venue knowledge', () => {
  const HOURS = { file: 'hours.md', title: 'Opening hours' }
  const PRICES = { file: 'prices.md', title: 'Prices' }

  it('parses done without the knowledge fields (an older daemon) as an ordinary answer', () => {
    expect(parseServerFrame(JSON.stringify(DONE))).toEqual({
      type: 'done', reason: 'stop', tokensPerSecond: 14.83, knowledge: 'ordinary', sources: [],
    })
  })

  it('parses done with knowledge and sources', () => {
    for (const knowledge of ['faq', 'grounded', 'fallback', 'ordinary']) {
      expect(parseServerFrame(JSON.stringify({ ...DONE, knowledge, sources: [HOURS, PRICES] }))).toMatchObject({
        knowledge, sources: [HOURS, PRICES],
      })
    }
  })

  it('takes an unknown or malformed knowledge as ordinary', () => {
    for (const knowledge of ['wiki', 'FAQ', '', 3, null, ['faq'], { faq: true }]) {
      expect(parseServerFrame(JSON.stringify({ ...DONE, knowledge }))).toMatchObject({ knowledge: 'ordinary' })
    }
  })

  it('leaves out malformed sources and keeps the rest in order', () => {
    const sources = [
      'hours.md', null, 7, [HOURS], { title: 'No file' }, { file: 'x.md' }, { file: 'x.md', title: 5 },
      { file: 3, title: 'Bad file' }, { file: 'blank.md', title: '   ' },
      PRICES, { file: 'hours.md', title: ' Opening hours ', extra: true }, HOURS,
    ]
    expect(parseServerFrame(JSON.stringify({ ...DONE, sources }))).toMatchObject({
      sources: [PRICES, HOURS, HOURS],
    })
    for (const bad of ['hours.md', { file: 'hours.md', title: 'Opening hours' }, 1, null]) {
      expect(parseServerFrame(JSON.stringify({ ...DONE, sources: bad }))).toMatchObject({ sources: [] })
    }
  })

  it('parses retract, ignoring any fields it carries', () => {
    expect(parseServerFrame('{"type":"retract"}')).toEqual({ type: 'retract' })
    expect(parseServerFrame('{"type":"retract","reason":"unsupported"}')).toEqual({ type: 'retract' })
  })

  it('keeps knowledge and sources on the finished answer', () => {
    chat.ask(state, 'When do you open?')
    recv(state, { type: 'session', session: 's' })
    expect(last(state)).toMatchObject({ knowledge: 'ordinary', sources: [] })
    recv(state, { type: 'token', text: 'At nine.' })
    recv(state, { ...DONE, knowledge: 'grounded', sources: [HOURS, PRICES, HOURS] })
    expect(last(state)).toMatchObject({
      state: 'done', text: 'At nine.', knowledge: 'grounded', sources: [HOURS, PRICES, HOURS],
    })
    expect(chat.sourceTitles(last(state).sources)).toEqual(['Opening hours', 'Prices'])
    chat.ask(state, 'And a poem?')
    recv(state, DONE)
    expect(last(state)).toMatchObject({ knowledge: 'ordinary', sources: [] })
  })

  it('keeps the model speed of the last answer the model wrote', () => {
    chat.ask(state, 'When do you open?')
    recv(state, { ...DONE, knowledge: 'grounded', sources: [HOURS] })
    expect(state.lastTokensPerSecond).toBeCloseTo(14.83)
    for (const knowledge of ['faq', 'fallback']) {
      chat.ask(state, 'q')
      recv(state, { ...DONE, timings: { tokens_per_s: 0 }, knowledge })
      expect(state.lastTokensPerSecond).toBeCloseTo(14.83)
    }
    chat.ask(state, 'A poem?')
    recv(state, { ...DONE, timings: { tokens_per_s: 20 } })
    expect(state.lastTokensPerSecond).toBe(20)
  })

  it('dedupes source titles by title, in order', () => {
    expect(chat.sourceTitles([])).toEqual([])
    expect(chat.sourceTitles([PRICES, HOURS, { file: 'hours-2.md', title: 'Opening hours' }, PRICES]))
      .toEqual(['Prices', 'Opening hours'])
  })

  it('retract mid-answer drops the text so far; the tokens after it replace it', () => {
    chat.ask(state, 'Is there a rooftop pool?')
    recv(state, { type: 'session', session: 's' })
    recv(state, { type: 'token', text: 'Yes, the rooftop ' })
    recv(state, { type: 'token', text: 'pool opens at' })
    recv(state, { type: 'retract' })
    expect(last(state)).toMatchObject({ state: 'streaming', text: '' })
    expect(chat.isAnswering(state)).toBe(true)
    recv(state, { type: 'token', text: "I don't have that " })
    recv(state, { type: 'token', text: 'information.' })
    recv(state, { ...DONE, knowledge: 'fallback', sources: [] })
    expect(last(state)).toMatchObject({
      state: 'done', text: "I don't have that information.", knowledge: 'fallback', sources: [],
    })
    expect(JSON.stringify(state)).not.toContain('rooftop pool opens')
  })

  it('retract before any token, or twice, leaves only the replacement', () => {
    chat.ask(state, 'q')
    recv(state, { type: 'session', session: 's' })
    recv(state, { type: 'retract' })
    recv(state, { type: 'token', text: 'Wrong' })
    recv(state, { type: 'retract' })
    recv(state, { type: 'token', text: 'Fallback' })
    recv(state, { ...DONE, knowledge: 'fallback' })
    expect(last(state)).toMatchObject({ state: 'done', text: 'Fallback', knowledge: 'fallback' })
  })

  it('retract after Stop still removes the withdrawn text', () => {
    chat.ask(state, 'q')
    recv(state, { type: 'session', session: 's' })
    recv(state, { type: 'token', text: 'Unsupported claim' })
    chat.cancel(state)
    recv(state, { type: 'retract' })
    recv(state, { type: 'token', text: 'Fallback' }) // after Stop the screen takes no more text
    recv(state, { ...DONE, knowledge: 'fallback' })
    expect(last(state)).toMatchObject({ state: 'cancelled', text: '' })
  })

  it('ignores a stray retract, and one for an answer cleared from the screen', () => {
    chat.ask(state, 'q')
    recv(state, { type: 'session', session: 's' })
    recv(state, { type: 'token', text: 'Kept' })
    recv(state, DONE)
    recv(state, { type: 'retract' })
    expect(last(state)).toMatchObject({ state: 'done', text: 'Kept' })
    chat.ask(state, 'next')
    chat.clearConversation(state)
    recv(state, { type: 'retract' })
    expect(state.items).toEqual([])
  })
})
