// How each server frame changes the conversation state (the order of frames is in docs/protocol.md).
import type { ClientFrame, DoneFrame, HelloFrame, ServerFrame } from '../protocol'
import {
  addNotice, beginQuestion, cancel, clearConversation, endMessage, findMessage, finishFlight, notice,
} from './store'
import type { ChatState } from './types'

// Refusals of a frame itself come without a `session` frame, and never end an answer already under way.
const REFUSALS = new Set(['bad_json', 'bad_frame', 'unknown_type', 'unknown_session', 'generation_in_progress'])
// Refusals that cannot be about a `chat` frame: the page sends valid JSON, and `chat` is a known type.
const NEVER_ABOUT_CHAT = new Set(['bad_json', 'unknown_type', 'voice_unavailable'])

export function applyFrame(state: ChatState, frame: ServerFrame): ClientFrame[] {
  switch (frame.type) {
    case 'hello': onHello(state, frame); return []
    case 'session': onSession(state, frame.session); return []
    case 'token': onToken(state, frame.text); return []
    case 'retract': onRetract(state); return []
    case 'queued': onQueued(state, frame.position); return []
    case 'done': return onDone(state, frame)
    case 'error': return onError(state, frame.code, frame.retryAfter, frame.message)
    case 'reset': return onReset(state, frame.visit)
    case 'visit':
      state.visit = frame.visit
      return []
    case 'voice': {
      const { type: _type, ...voice } = frame
      if (voice.listening && !state.voice.listening) state.partialTranscript = ''
      state.voice = voice
      return []
    }
    case 'transcript': return onTranscript(state, frame.text, frame.final)
    case 'speaking':
      // Per-sentence progress; whether the kiosk is speaking at all comes from `voice` frames (no flicker
      // between sentences).
      state.speakingSentence = frame.started ? frame.text : null
      return []
  }
}

function onHello(state: ChatState, hello: HelloFrame): void {
  state.helloReceived = true
  state.ready = hello.ready
  state.model = hello.model
  state.maxQuestionChars = hello.maxQuestionChars
  state.suggestions = hello.suggestions
  state.voice = hello.voice
  state.visit = hello.visit
  state.venue = {
    historyMode: hello.historyMode,
    operatorUnlock: hello.operatorUnlock,
    onscreenKeyboard: hello.onscreenKeyboard,
    name: hello.venueName,
    welcomeEn: hello.welcomeEn,
    welcomeZh: hello.welcomeZh,
    wakePhrase: hello.wakePhrase,
    wakePhraseZh: hello.wakePhraseZh,
  }
}

/** The idle reset: the visit is over; the next visitor is welcomed (the daemon has started a new visit). */
function onReset(state: ChatState, visit: string | null): ClientFrame[] {
  const out = clearConversation(state, false)
  state.visit = visit
  state.visitCount++
  state.welcome = true
  return out
}

function onSession(state: ChatState, session: string): void {
  const flight = state.flight
  if (flight === null) {
    // An answer the page did not ask for (e.g. started by voice without a transcript frame): show it anyway.
    beginQuestionless(state)
  } else {
    flight.awaitingSession = false
    if (flight.messageId === null) return // discarded: its session is not the screen's any more
  }
  state.session = session
  state.partialTranscript = ''
}

function beginQuestionless(state: ChatState): void {
  state.welcome = false
  const id = state.nextId++
  state.items.push({
    kind: 'message', id, role: 'assistant', text: '', state: 'streaming', stopping: false, cut: false, notice: null,
    knowledge: 'ordinary', sources: [],
  })
  state.flight = {
    messageId: id, question: '', sentSession: state.session, awaitingSession: false,
    retried: true, cancelRequested: false, droppedTokens: false,
  }
}

function onQueued(state: ChatState, position: number): void {
  const flight = state.flight
  const message = flight === null || flight.messageId === null ? undefined : findMessage(state, flight.messageId)
  if (message) message.queuePosition = position
}

function onToken(state: ChatState, text: string): void {
  const flight = state.flight
  if (flight === null || flight.messageId === null) return
  if (flight.cancelRequested) {
    // Tokens already on their way after Stop: the screen stays as it was when Stop was pressed.
    flight.droppedTokens = true
    return
  }
  const message = findMessage(state, flight.messageId)
  if (message) {
    message.text += text
    delete message.queuePosition
  }
}

/**
 * The answer written so far is withdrawn (the venue documents do not support it): it goes from the screen at
 * once, and the tokens that follow are its replacement. Even after Stop (when those tokens are dropped) the
 * withdrawn text does not stay.
 */
function onRetract(state: ChatState): void {
  const flight = state.flight
  if (flight === null || flight.messageId === null) return
  const message = findMessage(state, flight.messageId)
  if (message) message.text = ''
}

function onDone(state: ChatState, done: DoneFrame): ClientFrame[] {
  const flight = state.flight
  if (flight === null) return []
  // FAQ and fallback texts are not written by the model (their rate is 0, or the withdrawn answer's): the
  // speed shown stays the last model answer's.
  const byModel = done.knowledge === 'grounded' || done.knowledge === 'ordinary'
  if (done.tokensPerSecond !== null && flight.messageId !== null && byModel) {
    state.lastTokensPerSecond = done.tokensPerSecond
  }
  const stopped = done.reason === 'cancelled' || (flight.cancelRequested && flight.droppedTokens)
  endMessage(state, flight.messageId, stopped ? 'cancelled' : 'done')
  const message = findMessage(state, flight.messageId)
  if (message) {
    if (done.reason === 'length') message.cut = true
    message.knowledge = done.knowledge
    message.sources = done.sources
  }
  return finishFlight(state)
}

function onError(state: ChatState, code: string, retryAfter: number | null, message: string): ClientFrame[] {
  // Nothing can answer now (still loading, or an upstream server down with no local model): wait for /readyz.
  if (code === 'model_loading' || code === 'upstream_unavailable') state.ready = false
  const flight = state.flight
  const aboutFlight = flight !== null && !NEVER_ABOUT_CHAT.has(code) && (!REFUSALS.has(code) || flight.awaitingSession)
  const note = notice(code, retryAfter, message || null)
  if (!aboutFlight || flight === null) {
    addNotice(state, note)
    return []
  }
  if (flight.messageId === null) return finishFlight(state) // discarded: nobody needs to hear about it
  if (code === 'unknown_session' && !flight.retried && flight.sentSession !== null) {
    // The session was deleted or expired: forget it and ask the same question in a new conversation.
    flight.retried = true
    flight.sentSession = null
    state.session = null
    return [{ type: 'chat', text: flight.question, session: null }]
  }
  if (code === 'unknown_session') state.session = null
  endMessage(state, flight.messageId, 'error', note)
  return finishFlight(state)
}

function onTranscript(state: ChatState, text: string, final: boolean): ClientFrame[] {
  if (!final) {
    state.partialTranscript = text
    return []
  }
  state.partialTranscript = ''
  if (text.trim() === '') return []
  // A spoken question is asked exactly like a typed one, in the screen's own session; an answer still being
  // written is stopped first (the question waits for its `done`).
  return [...cancel(state), ...beginQuestion(state, text.trim(), true)]
}
