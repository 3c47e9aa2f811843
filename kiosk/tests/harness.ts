// The whole page in jsdom against a fake daemon, for tests that drive it as a visitor would.
import { nextTick, createApp, type App as VueApp } from 'vue'
import App from '../src/App.vue'
import { FakeSocket } from './fakeSocket'

export const HELLO = {
  type: 'hello', model: 'm', ready: true, idle_reset: 120, max_question_chars: 4000,
  suggestions: ['What are the opening hours?'],
  voice: { type: 'voice', available: false, listening: false, speaking: false, speech: true, detail: 'off' },
  visit: 'v1', history_mode: 'visit', operator_unlock: false, onscreen_keyboard: 'auto',
  venue_name: '', welcome_en: '', welcome_zh: '',
}

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(body === null ? null : JSON.stringify(body), {
    status, headers: { 'Content-Type': 'application/json', ...headers },
  })
}

export const flush = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) {
    await nextTick()
    await new Promise((r) => setTimeout(r, 0))
  }
  await new Promise((r) => setTimeout(r, 20))
}

let app: VueApp | null = null
let root: HTMLElement | null = null

export const $ = (id: string): HTMLElement | null => document.querySelector<HTMLElement>(`[data-testid="${id}"]`)
export const $$ = (id: string): HTMLElement[] => Array.from(document.querySelectorAll<HTMLElement>(`[data-testid="${id}"]`))

export async function mount(hello: object = HELLO): Promise<FakeSocket> {
  root = document.createElement('div')
  document.body.appendChild(root)
  app = createApp(App)
  app.mount(root)
  await flush()
  const socket = FakeSocket.latest
  socket.open()
  socket.receive(hello)
  await flush()
  return socket
}

export function unmount(): void {
  app?.unmount()
  app = null
  root?.remove()
  root = null
}

export async function type(text: string, init: KeyboardEventInit = {}): Promise<void> {
  const input = $('composer-input') as HTMLTextAreaElement
  input.value = text
  input.dispatchEvent(new Event('input'))
  await nextTick()
  input.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true, cancelable: true, ...init }))
  await flush()
}

/** An answer to the last question, start to end. */
export async function answer(socket: FakeSocket, session: string, text = 'Fine.'): Promise<void> {
  socket.receive({ type: 'session', session })
  socket.receive({ type: 'token', text })
  socket.receive({ type: 'done', reason: 'stop', usage: {}, timings: {} })
  await flush()
}

export const headerOf = (init: RequestInit | undefined, name: string): string | undefined =>
  (init?.headers as Record<string, string> | undefined)?.[name]
