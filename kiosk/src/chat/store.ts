// Actions on the conversation state. Each mutates the state and returns the frames to send to the daemon,
// so the state machine stays free of sockets and timers (and is tested as plain data).
import type { ClientFrame, Source } from '../protocol'
import type { ChatMessage, ChatState, Flight, MessageState, Notice, TimelineItem } from './types'

export interface StoredTurn {
  role: 'user' | 'assistant'
  content: string
  status: string
}

export function findMessage(state: ChatState, id: number | null): ChatMessage | null {
  if (id === null) return null
  for (let i = state.items.length - 1; i >= 0; i--) {
    const item = state.items[i]
    if (item.id === id) return item.kind === 'message' ? item : null
  }
  return null
}

function pushMessage(state: ChatState, role: ChatMessage['role'], text: string, msgState: MessageState): ChatMessage {
  const message: ChatMessage = {
    kind: 'message', id: state.nextId++, role, text, state: msgState, stopping: false, cut: false, notice: null,
    knowledge: 'ordinary', sources: [],
  }
  state.items.push(message)
  // Return the stored element: when `state` is reactive, that is the reactive proxy.
  return state.items[state.items.length - 1] as ChatMessage
}

export function addNotice(state: ChatState, notice: Notice): void {
  state.items.push({ kind: 'notice', id: state.nextId++, notice })
}

export function notice(code: string, retryAfter: number | null = null, detail: string | null = null): Notice {
  return { code, retryAfter, detail }
}

/** An answer is being written for the screen (or a question waits to be sent). */
export function isAnswering(state: ChatState): boolean {
  return (state.flight !== null && state.flight.messageId !== null) || state.deferred !== null
}

/** The answer the Stop button would stop: shown, and not already asked to stop. */
export function canStop(state: ChatState): boolean {
  const flight = state.flight
  return (flight !== null && flight.messageId !== null && !flight.cancelRequested) || state.deferred !== null
}

/** The titles of an answer's sources as shown under it: each once, in the daemon's order. */
export function sourceTitles(sources: readonly Source[]): string[] {
  return [...new Set(sources.map((s) => s.title))]
}

export function canAsk(state: ChatState): boolean {
  return state.connected && !isAnswering(state) && !state.voice.listening
}

function newFlight(messageId: number, question: string, session: string | null): Flight {
  return {
    messageId, question, sentSession: session, awaitingSession: true,
    retried: false, cancelRequested: false, droppedTokens: false,
  }
}

/** A question and its (empty) answer bubble; the answer is started now or after a discarded one ends. */
export function beginQuestion(state: ChatState, question: string, send: boolean): ClientFrame[] {
  state.welcome = false // a question (typed, tapped or spoken) starts the visit
  pushMessage(state, 'user', question, 'done')
  const answer = pushMessage(state, 'assistant', '', 'streaming')
  if (state.flight !== null) {
    state.deferred = { messageId: answer.id, question, send }
    return []
  }
  state.flight = newFlight(answer.id, question, state.session)
  return send ? [{ type: 'chat', text: question, session: state.session }] : []
}

export function ask(state: ChatState, text: string): ClientFrame[] {
  const question = text.trim()
  if (question === '' || !canAsk(state)) return []
  return beginQuestion(state, question, true)
}

export function cancel(state: ChatState): ClientFrame[] {
  if (state.deferred !== null) {
    // Never sent: it simply does not happen.
    endMessage(state, state.deferred.messageId, 'cancelled')
    state.deferred = null
    return []
  }
  const flight = state.flight
  if (flight === null || flight.messageId === null || flight.cancelRequested) return []
  flight.cancelRequested = true
  const message = findMessage(state, flight.messageId)
  if (message) message.stopping = true
  return [{ type: 'cancel' }]
}

export function endMessage(state: ChatState, id: number | null, to: MessageState, note: Notice | null = null): void {
  const message = findMessage(state, id)
  if (!message) return
  message.state = to
  message.stopping = false
  if (note) message.notice = note
}

/** The flight is over: start the question that waited for it, if any. */
export function finishFlight(state: ChatState): ClientFrame[] {
  state.flight = null
  const next = state.deferred
  if (next === null) return []
  state.deferred = null
  state.flight = newFlight(next.messageId, next.question, state.session)
  return next.send ? [{ type: 'chat', text: next.question, session: state.session }] : []
}

/**
 * Clear the screen for a new conversation (New customer, New conversation, idle reset, switching history).
 * A running answer is cancelled on the daemon only when `cancelRunning` (the idle reset must not).
 */
export function clearConversation(state: ChatState, cancelRunning = true): ClientFrame[] {
  const out: ClientFrame[] = []
  const flight = state.flight
  if (flight !== null && flight.messageId !== null) {
    if (cancelRunning && !flight.cancelRequested) out.push({ type: 'cancel' })
    flight.cancelRequested = true
    flight.messageId = null
  }
  state.deferred = null
  state.items = []
  state.session = null
  state.partialTranscript = ''
  return out
}

/**
 * New customer: the screen is cleared and the daemon asked to end the visit. Until its `visit` frame brings
 * the new token the page holds none, so nothing of the visit that ended can be fetched with it.
 */
export function newVisit(state: ChatState): ClientFrame[] {
  const out = clearConversation(state)
  state.visit = null
  state.visitCount++
  state.welcome = false // the visitor who pressed it is here already
  return [...out, { type: 'new_visit' }]
}

export function showStoredSession(state: ChatState, id: string, turns: StoredTurn[]): ClientFrame[] {
  const out = clearConversation(state)
  const items: TimelineItem[] = []
  for (const turn of turns) {
    const done: MessageState = turn.role === 'assistant' && turn.status === 'interrupted' ? 'interrupted' : 'done'
    items.push({
      kind: 'message', id: state.nextId++, role: turn.role === 'user' ? 'user' : 'assistant',
      text: turn.content, state: done, stopping: false, cut: false, notice: null, knowledge: 'ordinary', sources: [],
    })
  }
  state.items = items
  state.session = id
  return out
}

export function connectionOpened(state: ChatState): void {
  state.connected = true
  state.helloReceived = false
  state.ready = null
}

/** The socket is gone: the answer being written can never finish, so it is marked lost (text kept). */
export function connectionLost(state: ChatState): void {
  if (state.flight !== null) endMessage(state, state.flight.messageId, 'lost')
  if (state.deferred !== null) endMessage(state, state.deferred.messageId, 'lost')
  state.flight = null
  state.deferred = null
  state.connected = false
  state.helloReceived = false
  state.ready = null
  state.partialTranscript = ''
  state.voice = { ...state.voice, listening: false, speaking: false }
}
