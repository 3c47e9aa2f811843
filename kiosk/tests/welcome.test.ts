// The welcome screen, the larger-text toggle and the touch guards.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { setLanguage } from '../src/i18n'
import { installTouchGuard } from '../src/touchGuard'
import { FakeSocket } from './fakeSocket'
import { $, $$, HELLO, answer, flush, json, mount, type, unmount } from './harness'

const VENUE = { ...HELLO, venue_name: 'City Library', welcome_en: 'Welcome to the library!', welcome_zh: '欢迎来到图书馆！' }
const VOICE_ON = { ...HELLO.voice, available: true, detail: null, wake_phrase: 'hello kiosk' }

beforeEach(() => {
  FakeSocket.instances = []
  vi.stubGlobal('WebSocket', FakeSocket)
  vi.stubGlobal('fetch', vi.fn(async () => json({ sessions: [] })))
  window.sessionStorage.clear()
  setLanguage('en')
})
afterEach(() => {
  unmount()
  vi.unstubAllGlobals()
  document.documentElement.classList.remove('large-text')
})

describe('the welcome screen', () => {
  it('greets with the venue name, its line in the page language, chips and tap to start', async () => {
    await mount(VENUE)
    expect($('app')!.dataset.welcome).toBe('true')
    expect($('welcome-venue')!.textContent).toBe('City Library')
    expect($('welcome-line')!.textContent).toBe('Welcome to the library!')
    expect($('welcome-tap')!.textContent).toContain('Tap to start')
    expect($('welcome-tap')!.textContent).toContain('点击开始')
    expect($$('suggestion')).toHaveLength(1)
    expect($('welcome-wake')).toBeNull() // no wake phrase set
    setLanguage('zh')
    await flush()
    expect($('welcome-line')!.textContent).toBe('欢迎来到图书馆！')
  })

  it('falls back to a general welcome and names the wake phrase when voice works', async () => {
    await mount({ ...HELLO, voice: VOICE_ON })
    expect($('welcome-venue')!.textContent).toBe('Welcome')
    expect($('welcome-line')!.textContent).not.toBe('')
    expect($('welcome-wake')!.textContent).toContain('hello kiosk')
  })

  it('any touch dismisses it; the idle reset brings it back', async () => {
    const socket = await mount(VENUE)
    $('welcome-line')!.click()
    await flush()
    expect($('welcome')).toBeNull()
    expect($('app')!.dataset.welcome).toBe('false')
    socket.receive({ type: 'reset', reason: 'idle', session: 's', visit: 'v2' })
    await flush()
    expect($('welcome')).not.toBeNull()
  })

  it('switching the language or the text size keeps it', async () => {
    await mount(VENUE)
    $('lang-toggle')!.click()
    $('text-size')!.click()
    await flush()
    expect($('welcome-line')!.textContent).toBe('欢迎来到图书馆！')
  })

  it('a tapped suggestion is asked at once', async () => {
    const socket = await mount(VENUE)
    $('suggestion')!.click()
    await flush()
    expect(socket.sent.at(-1)).toEqual({ type: 'chat', text: 'What are the opening hours?', session: null })
    expect($('welcome')).toBeNull()
  })

  it('New customer shows the plain empty screen (the visitor is already here)', async () => {
    const socket = await mount(VENUE)
    await type('Hi')
    await answer(socket, 's')
    $('new-customer')!.click()
    await flush()
    expect($('welcome')).toBeNull()
    expect($$('message')).toHaveLength(0)
  })
})

describe('larger text', () => {
  it('is toggled for the visit and off again for the next one', async () => {
    const socket = await mount()
    const html = document.documentElement
    expect(html.classList.contains('large-text')).toBe(false)
    $('text-size')!.click()
    await flush()
    expect(html.classList.contains('large-text')).toBe(true)
    expect($('text-size')!.getAttribute('aria-pressed')).toBe('true')
    expect(window.sessionStorage.getItem('kiosk.largeText')).toBe('v1')
    socket.receive({ type: 'reset', reason: 'idle', session: 's', visit: 'v2' })
    await flush()
    expect(html.classList.contains('large-text')).toBe(false)
    expect(window.sessionStorage.getItem('kiosk.largeText')).toBeNull()
  })

  it('survives a reload within the same visit', async () => {
    window.sessionStorage.setItem('kiosk.largeText', 'v1')
    await mount()
    expect(document.documentElement.classList.contains('large-text')).toBe(true)
    unmount()
    document.documentElement.classList.remove('large-text')
    await mount({ ...HELLO, visit: 'v9' })
    expect(document.documentElement.classList.contains('large-text')).toBe(false)
  })
})

describe('touch guards', () => {
  it('no context menu, selection or drag outside the question box; the box keeps them', () => {
    const remove = installTouchGuard(document)
    const box = document.body.appendChild(document.createElement('textarea'))
    const text = document.body.appendChild(document.createElement('p'))
    const fire = (target: Element, type: string) => {
      const event = new Event(type, { bubbles: true, cancelable: true })
      target.dispatchEvent(event)
      return event.defaultPrevented
    }
    for (const type of ['contextmenu', 'selectstart', 'dragstart']) {
      expect(fire(text, type)).toBe(true)
      expect(fire(box, type)).toBe(false)
    }
    const zoom = new WheelEvent('wheel', { ctrlKey: true, bubbles: true, cancelable: true })
    text.dispatchEvent(zoom)
    expect(zoom.defaultPrevented).toBe(true)
    remove()
    expect(fire(text, 'contextmenu')).toBe(false)
    box.remove()
    text.remove()
  })
})
