// Wires the pieces together: the socket, the conversation state machine, readiness and the status line.
// Components get reactive state and plain actions; none of them talks to the socket directly.
import { computed, onBeforeUnmount, reactive, watch } from 'vue'
import { applyFrame } from './chat/frames'
import * as chat from './chat/store'
import { createChatState, type ChatState } from './chat/types'
import { lang, questionLanguage, type Lang } from './i18n'
import { parseServerFrame, type ClientFrame } from './protocol'
import { connect, socketUrl, type Connection } from './net/connection'
import { deriveStatus } from './status'
import { useLink } from './useLink'
import { useReadiness } from './useReadiness'

export interface KioskHooks {
  /** An answer ended (the history list may have changed). */
  onAnswerEnded?: () => void
  /** The daemon ended the screen's conversation after the kiosk was left idle. */
  onReset?: () => void
}

export function useKiosk(hooks: KioskHooks = {}) {
  const state = reactive(createChatState()) as ChatState
  let connection: Connection | null = null
  const { link, now, online, onStatus } = useLink(() => connection?.retryNow())
  const readiness = useReadiness(state)

  // The language spoken questions are recognized in: the page's switch, or the language of the visitor's last
  // question (typed or spoken), whichever came last; the daemon judges questions the same way, so the `lang`
  // of a `listen` never undoes what a question told it.
  let speechLang: Lang = lang.value

  function send(frames: ClientFrame[]): void {
    for (const frame of frames) {
      if (frame.type === 'chat') speechLang = questionLanguage(frame.text)
      connection?.send(frame)
    }
  }

  function tellLanguage(next: Lang): void {
    speechLang = next
    send([{ type: 'language', lang: next }])
  }
  watch(lang, tellLanguage)
  // A new visitor starts in the page's language, not in the one the last visitor asked in.
  watch(() => state.visitCount, () => {
    if (speechLang !== lang.value) tellLanguage(lang.value)
  })

  function onFrame(data: string): void {
    const frame = parseServerFrame(data)
    if (frame === null) return // unknown or malformed: a newer daemon may send more than this page knows
    const hadFlight = state.flight !== null
    send(applyFrame(state, frame))
    if (frame.type === 'hello') {
      readiness.hello(frame.ready)
      send([{ type: 'language', lang: speechLang }]) // a new connection is a new screen to the daemon
    }
    readiness.check()
    if (hadFlight && (frame.type === 'done' || frame.type === 'error')) hooks.onAnswerEnded?.()
    if (frame.type === 'reset') hooks.onReset?.()
  }

  function start(): void {
    connection = connect({
      url: socketUrl(window.location),
      onFrame,
      onOpen: () => {
        chat.connectionOpened(state)
        readiness.opened()
      },
      onClose: () => {
        readiness.stop()
        chat.connectionLost(state)
      },
      onStatus,
    })
  }
  onBeforeUnmount(() => connection?.close())

  const status = computed(() =>
    deriveStatus({
      link: link.value,
      connected: state.connected,
      ready: state.ready,
      answering: chat.isAnswering(state),
      speaking: state.voice.speaking,
      online: online.value,
      now: now.value,
    }),
  )

  const actions = {
    /** True when the question was taken (the composer then clears itself). */
    ask(text: string): boolean {
      const before = state.items.length
      send(chat.ask(state, text))
      return state.items.length !== before
    },
    stop: () => send(chat.cancel(state)),
    newConversation: () => send(chat.clearConversation(state)),
    /** New customer: the screen is cleared and the visit ends (the daemon answers with a new one). */
    newCustomer: () => send(chat.newVisit(state)),
    dismissWelcome: () => (state.welcome = false),
    showSession: (id: string, turns: chat.StoredTurn[]) => send(chat.showStoredSession(state, id, turns)),
    notice: (code: string) => chat.addNotice(state, chat.notice(code)),
    toggleListen: () =>
      send([state.voice.listening ? { type: 'listen', on: false } : { type: 'listen', on: true, lang: speechLang }]),
    toggleSpeech: () => send([{ type: 'speech', on: !state.voice.speech }]),
  }

  return {
    state,
    status,
    start,
    actions,
    canAsk: computed(() => chat.canAsk(state)),
    canStop: computed(() => chat.canStop(state)),
  }
}

export type Kiosk = ReturnType<typeof useKiosk>
