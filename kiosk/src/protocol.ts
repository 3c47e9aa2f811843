// The WebSocket protocol of kioskd (docs/protocol.md), as seen by the page.
// Server frames are parsed defensively: the daemon may add frame types and fields in later versions, so
// unknown types come back as null (ignored) and missing fields take safe defaults.

export interface VoiceState {
  available: boolean
  listening: boolean
  speaking: boolean
  speech: boolean
  detail: string | null
}

export interface HelloFrame {
  type: 'hello'
  model: string
  ready: boolean
  idleReset: number
  maxQuestionChars: number
  suggestions: string[]
  voice: VoiceState
  /** The screen's current visit (opaque); null from daemons without visits. */
  visit: string | null
  historyMode: HistoryMode
  /** An operator PIN is configured: the drawer offers the unlock. */
  operatorUnlock: boolean
  onscreenKeyboard: KeyboardMode
  venueName: string
  welcomeEn: string
  welcomeZh: string
  /** Said to start listening hands-free; empty when none is set. */
  wakePhrase: string
  /** The phrase while the page is in Chinese; empty: `wakePhrase` in Chinese too. */
  wakePhraseZh: string
}

/** The languages the daemon recognizes spoken questions in. */
export type SpeechLang = 'en' | 'zh'

/** What the daemon keeps of conversations (setting `history_mode`). */
export type HistoryMode = 'keep' | 'visit' | 'off'
/** When the on-screen keyboard shows (setting `onscreen_keyboard`). */
export type KeyboardMode = 'auto' | 'always' | 'off'

/** How an answer was made (`done.knowledge`): the venue's curated FAQ text, the model answering from venue
 * sections, the "I don't have that information" fallback, or an ordinary model answer. */
export type Knowledge = 'faq' | 'grounded' | 'fallback' | 'ordinary'

/** A venue section an answer used (`done.sources`). */
export interface Source {
  file: string
  title: string
}

export interface DoneFrame {
  type: 'done'
  reason: string
  tokensPerSecond: number | null
  /** 'ordinary' when the daemon does not say (older daemons) or says something this page does not know. */
  knowledge: Knowledge
  /** Empty when missing; malformed entries are left out. */
  sources: Source[]
}

export type ServerFrame =
  | HelloFrame
  | DoneFrame
  | { type: 'session'; session: string }
  | { type: 'token'; text: string }
  | { type: 'retract' }
  | { type: 'queued'; position: number }
  | { type: 'error'; code: string; message: string; retryAfter: number | null }
  | { type: 'reset'; session: string | null; visit: string | null }
  | { type: 'visit'; visit: string | null }
  | ({ type: 'voice' } & VoiceState)
  | { type: 'transcript'; text: string; final: boolean; settled?: boolean }
  | { type: 'speaking'; started: boolean; text: string }

export type ClientFrame =
  | { type: 'chat'; text: string; session: string | null }
  | { type: 'cancel' }
  | { type: 'listen'; on: boolean; lang?: SpeechLang }
  | { type: 'language'; lang: SpeechLang }
  | { type: 'speech'; on: boolean }
  | { type: 'new_visit' }

type Raw = Record<string, unknown>

const str = (v: unknown, fallback = ''): string => (typeof v === 'string' ? v : fallback)
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null)
const bool = (v: unknown, fallback: boolean): boolean => (typeof v === 'boolean' ? v : fallback)

export const DEFAULT_MAX_QUESTION_CHARS = 4000

export const VOICE_OFF: VoiceState = {
  available: false, listening: false, speaking: false, speech: true, detail: null,
}

export function parseVoice(raw: unknown): VoiceState {
  const r = (raw && typeof raw === 'object' ? raw : {}) as Raw
  return {
    available: bool(r.available, false),
    listening: bool(r.listening, false),
    speaking: bool(r.speaking, false),
    speech: bool(r.speech, true),
    detail: typeof r.detail === 'string' ? r.detail : null,
  }
}

const HISTORY_MODES: readonly HistoryMode[] = ['keep', 'visit', 'off']
const KEYBOARD_MODES: readonly KeyboardMode[] = ['auto', 'always', 'off']

function oneOf<T extends string>(v: unknown, options: readonly T[], fallback: T): T {
  return options.find((o) => o === v) ?? fallback
}

const token = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null)

/** The wake phrase, from the voice state (or the hello itself); empty when none is set. */
function wakePhrase(r: Raw): string {
  const voice = (r.voice && typeof r.voice === 'object' ? r.voice : {}) as Raw
  return str(voice.wake_phrase, str(r.wake_phrase)).trim()
}

function parseVenue(r: Raw) {
  return {
    visit: token(r.visit),
    // An unknown mode is treated as the strictest one the page knows how to show.
    historyMode: r.history_mode === undefined ? 'keep' : oneOf(r.history_mode, HISTORY_MODES, 'off'),
    operatorUnlock: r.operator_unlock === true,
    onscreenKeyboard: oneOf(r.onscreen_keyboard, KEYBOARD_MODES, 'auto'),
    venueName: str(r.venue_name).trim(),
    welcomeEn: str(r.welcome_en).trim(),
    welcomeZh: str(r.welcome_zh).trim(),
    wakePhrase: wakePhrase(r),
    wakePhraseZh: str(r.wake_phrase_zh).trim(),
  } satisfies Partial<HelloFrame>
}

function parseHello(r: Raw): HelloFrame {
  const max = num(r.max_question_chars)
  return {
    ...parseVenue(r),
    type: 'hello',
    model: str(r.model),
    ready: bool(r.ready, true),
    idleReset: num(r.idle_reset) ?? 0,
    maxQuestionChars: max && max > 0 ? Math.floor(max) : DEFAULT_MAX_QUESTION_CHARS,
    suggestions: Array.isArray(r.suggestions)
      ? r.suggestions.filter((s): s is string => typeof s === 'string' && s.trim() !== '')
      : [],
    voice: parseVoice(r.voice),
  }
}

const KNOWLEDGE: readonly Knowledge[] = ['faq', 'grounded', 'fallback', 'ordinary']

function parseKnowledge(v: unknown): Knowledge {
  return KNOWLEDGE.find((k) => k === v) ?? 'ordinary'
}

/** Only entries that are objects with a string `file` and a non-blank string `title` are kept. */
function parseSources(v: unknown): Source[] {
  if (!Array.isArray(v)) return []
  const sources: Source[] = []
  for (const entry of v) {
    if (!entry || typeof entry !== 'object' || Array.isArray(entry)) continue
    const e = entry as Raw
    if (typeof e.file !== 'string' || typeof e.title !== 'string' || e.title.trim() === '') continue
    sources.push({ file: e.file, title: e.title.trim() })
  }
  return sources
}

function parseDone(r: Raw): DoneFrame {
  const timings = (r.timings && typeof r.timings === 'object' ? r.timings : {}) as Raw
  return {
    type: 'done',
    reason: str(r.reason, 'stop'),
    tokensPerSecond: num(timings.tokens_per_s),
    knowledge: parseKnowledge(r.knowledge),
    sources: parseSources(r.sources),
  }
}

const PARSERS: Record<string, (r: Raw) => ServerFrame> = {
  hello: parseHello,
  done: parseDone,
  session: (r) => ({ type: 'session', session: str(r.session) }),
  token: (r) => ({ type: 'token', text: str(r.text) }),
  retract: () => ({ type: 'retract' }),
  queued: (r) => ({ type: 'queued', position: Math.max(1, Math.floor(num(r.position) ?? 1)) }),
  error: (r) => ({ type: 'error', code: str(r.code, 'unknown'), message: str(r.message), retryAfter: num(r.retry_after) }),
  reset: (r) => ({ type: 'reset', session: typeof r.session === 'string' ? r.session : null, visit: token(r.visit) }),
  visit: (r) => ({ type: 'visit', visit: token(r.visit) }),
  voice: (r) => ({ type: 'voice', ...parseVoice(r) }),
  transcript: (r) => ({ type: 'transcript', text: str(r.text), final: r.final === true, settled: r.settled === true }),
  speaking: (r) => ({ type: 'speaking', started: r.state === 'started', text: str(r.text) }),
}

/** One text frame from the server, or null for anything this page does not understand. */
export function parseServerFrame(data: string): ServerFrame | null {
  let raw: unknown
  try {
    raw = JSON.parse(data)
  } catch {
    return null
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return null
  const r = raw as Raw
  const parse = typeof r.type === 'string' ? PARSERS[r.type] : undefined
  return parse && Object.prototype.hasOwnProperty.call(PARSERS, r.type as string) ? parse(r) : null
}
