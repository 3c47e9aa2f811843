// The conversation state the page shows, kept as plain data so the reducer can be unit-tested without Vue
// (the app wraps one ChatState in reactive()).
import {
  DEFAULT_MAX_QUESTION_CHARS, VOICE_OFF, type HistoryMode, type KeyboardMode, type Knowledge, type Source, type VoiceState,
} from '../protocol'

export type MessageState = 'streaming' | 'done' | 'cancelled' | 'interrupted' | 'lost' | 'error'

/** An error or hint to show in the conversation; localized when rendered, so a language switch applies. */
export interface Notice {
  code: string
  retryAfter: number | null
  detail: string | null
}

export interface ChatMessage {
  kind: 'message'
  id: number
  role: 'user' | 'assistant'
  text: string
  state: MessageState
  /** The user pressed Stop: the caret goes away at once, before the daemon's `done` arrives. */
  stopping: boolean
  /** The answer hit the length limit (`done.reason == "length"`). */
  cut: boolean
  /** While the question waits for the model: how many answers go before it (1: next). */
  queuePosition?: number
  notice: Notice | null
  /** How the answer was made, from its `done` frame ('ordinary' until then, and for stored answers). */
  knowledge: Knowledge
  /** The venue sections the answer used, from its `done` frame (shown under the finished answer). */
  sources: Source[]
}

export interface NoticeItem {
  kind: 'notice'
  id: number
  notice: Notice
}

export type TimelineItem = ChatMessage | NoticeItem

/**
 * The answer the daemon is writing (or about to write) on this connection. `messageId` null means the
 * screen was cleared meanwhile: its remaining frames are swallowed until its `done`/`error`.
 */
export interface Flight {
  messageId: number | null
  question: string
  sentSession: string | null
  awaitingSession: boolean
  retried: boolean
  cancelRequested: boolean
  droppedTokens: boolean
}

/** A question asked while a discarded answer is still finishing; started when that answer ends. */
export interface Deferred {
  messageId: number
  question: string
  /** Spoken questions are started by the daemon itself: nothing to send. */
  send: boolean
}

export interface ChatState {
  items: TimelineItem[]
  nextId: number
  session: string | null
  flight: Flight | null
  deferred: Deferred | null
  connected: boolean
  helloReceived: boolean
  /** null: not known yet (no hello on this connection). */
  ready: boolean | null
  model: string
  maxQuestionChars: number
  suggestions: string[]
  voice: VoiceState
  partialTranscript: string
  /** The sentence being read aloud now (from `speaking` frames), or null. */
  speakingSentence: string | null
  lastTokensPerSecond: number | null
  /** The screen's visit token; null while a new one is awaited (or from daemons without visits). */
  visit: string | null
  /** Bumped whenever a visit ends on this screen (New customer, idle reset): what belongs to it goes. */
  visitCount: number
  /** The welcome screen shows (at start and after the idle reset) until the first touch. */
  welcome: boolean
  venue: Venue
}

/** The venue's settings from `hello`, as the page shows them. */
export interface Venue {
  historyMode: HistoryMode
  operatorUnlock: boolean
  onscreenKeyboard: KeyboardMode
  name: string
  welcomeEn: string
  welcomeZh: string
  wakePhrase: string
  wakePhraseZh: string
}

export const DEFAULT_VENUE: Venue = {
  historyMode: 'keep', operatorUnlock: false, onscreenKeyboard: 'auto', name: '', welcomeEn: '', welcomeZh: '',
  wakePhrase: '', wakePhraseZh: '',
}

export function createChatState(): ChatState {
  return {
    items: [],
    nextId: 1,
    session: null,
    flight: null,
    deferred: null,
    connected: false,
    helloReceived: false,
    ready: null,
    model: '',
    maxQuestionChars: DEFAULT_MAX_QUESTION_CHARS,
    suggestions: [],
    voice: { ...VOICE_OFF },
    partialTranscript: '',
    speakingSentence: null,
    lastTokensPerSecond: null,
    visit: null,
    visitCount: 0,
    welcome: true,
    venue: { ...DEFAULT_VENUE },
  }
}
