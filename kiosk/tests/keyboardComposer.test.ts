import { afterEach, describe, expect, it } from 'vitest'
import { createApp, h, nextTick, type App as VueApp } from 'vue'
import ComposerBar from '../src/components/ComposerBar.vue'
import { setLanguage } from '../src/i18n'
import type { KeyboardMode } from '../src/keyboard/mode'
import { loadPinyinIndex } from '../src/keyboard/pinyin'

let app: VueApp | null = null
afterEach(() => {
  app?.unmount()
  app = null
  document.body.innerHTML = ''
})

function mountComposer(keyboardMode?: KeyboardMode) {
  const asked: string[] = []
  const host = document.createElement('div')
  document.body.appendChild(host)
  const voice = { available: false, listening: false, speaking: false, speech: false, detail: null }
  app = createApp({
    render: () => h(ComposerBar, {
      maxChars: 100, canAsk: true, canStop: false, connected: true, voice, partialTranscript: '',
      submit: (text: string) => (asked.push(text), true), ...(keyboardMode ? { keyboardMode } : {}),
    }),
  })
  app.mount(host)
  return { asked, host }
}

const key = (host: HTMLElement, name: string) => host.querySelector<HTMLElement>(`[data-skbtn="${name}"]`)
const box = (host: HTMLElement) => host.querySelector<HTMLTextAreaElement>('[data-testid=composer-input]')!

function press(host: HTMLElement, name: string): void {
  const button = key(host, name)
  if (!button) throw new Error(`no key ${name}`)
  // simple-keyboard presses on pointerdown (or mousedown where pointer events are missing)
  for (const type of ['pointerdown', 'mousedown', 'pointerup', 'mouseup']) {
    button.dispatchEvent(new MouseEvent(type, { bubbles: true }))
  }
}

describe('the composer with its on-screen keyboard', () => {
  it('"always": types English with the keys and asks with enter', async () => {
    setLanguage('en')
    const { asked, host } = mountComposer('always')
    await nextTick()
    expect(host.querySelector('[data-testid=onscreen-keyboard]')).not.toBeNull()
    for (const k of ['h', 'i', '{space}', 'y', 'o', 'u', '{bksp}']) press(host, k)
    await nextTick()
    expect(box(host).value).toBe('hi yo')
    press(host, '{enter}')
    expect(asked).toEqual(['hi yo'])
  })

  it('"always" in Chinese: pinyin gives words to pick', async () => {
    setLanguage('zh')
    await loadPinyinIndex()
    const { asked, host } = mountComposer('always')
    await nextTick()
    for (const k of 'kaifang') press(host, k)
    await new Promise((resolve) => setTimeout(resolve, 0))
    await nextTick()
    const first = host.querySelector<HTMLButtonElement>('[data-testid=kb-candidate]')!
    expect(first.textContent?.trim()).toBe('开放')
    first.click()
    await nextTick()
    press(host, '{enter}')
    expect(asked).toEqual(['开放'])
    setLanguage('en')
  })

  it('"off" never shows it, and "auto" without touch does not either', async () => {
    const off = mountComposer('off')
    box(off.host).focus()
    await nextTick()
    expect(off.host.querySelector('[data-testid=onscreen-keyboard]')).toBeNull()
    app?.unmount()
    const auto = mountComposer()
    box(auto.host).focus()
    await nextTick()
    expect(auto.host.querySelector('[data-testid=onscreen-keyboard]')).toBeNull()
  })
})
