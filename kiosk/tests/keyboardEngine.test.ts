import { describe, expect, it } from 'vitest'
import { nextTick, ref } from 'vue'
import type { Lang } from '../src/i18n'
import { useKeyboardEngine } from '../src/keyboard/engine'
import { keyboardVisible, parseMode, queryMode } from '../src/keyboard/mode'
import { loadPinyinIndex } from '../src/keyboard/pinyin'
import { deleteBefore, insertAt } from '../src/keyboard/textEdit'

function rig(lang: Lang) {
  const out = { text: '', sent: 0, switched: 0, hidden: 0 }
  const language = ref<Lang>(lang)
  const engine = useKeyboardEngine(language, {
    insert: (t) => (out.text += t),
    backspace: () => (out.text = out.text.slice(0, -1)),
    enter: () => out.sent++,
    switchLanguage: () => out.switched++,
    hide: () => out.hidden++,
  })
  const type = (keys: string) => [...keys].forEach((k) => engine.press(k))
  return { out, engine, type, language }
}

async function ready(): Promise<void> {
  await loadPinyinIndex()
  await new Promise((resolve) => setTimeout(resolve, 0))
  await nextTick()
}

describe('the keyboard engine', () => {
  it('types English directly, with shift for one letter, space, backspace and enter', () => {
    const { out, engine, type } = rig('en')
    engine.press('{shift}')
    expect(engine.layer.value).toBe('shift')
    type('Hi') // the shifted layer's keys are capitals; one of them returns to small letters
    engine.press('{space}')
    type('yo?')
    engine.press('{bksp}')
    engine.press('{enter}')
    expect(out.text).toBe('Hi yo')
    expect(out.sent).toBe(1)
    expect(engine.layer.value).toBe('default')
  })

  it('turns pinyin into a chosen word and keeps the rest for the next pick', async () => {
    const { out, engine, type } = rig('zh')
    type('tushuguanjidian')
    await ready()
    expect(engine.paged.value.items[0]!.word).toBe('图书馆')
    engine.pick(engine.paged.value.items[0]!)
    expect(engine.buffer.value).toBe('jidian')
    engine.press('{space}') // space takes the first candidate
    type('?')
    expect(out.text).toBe('图书馆几点？')
    expect(engine.buffer.value).toBe('')
  })

  it('pages candidates, and backspace edits the pinyin before the text', async () => {
    const { out, engine, type } = rig('zh')
    type('shix')
    await ready()
    engine.press('{bksp}')
    expect(engine.buffer.value).toBe('shi')
    const first = engine.paged.value.items.map((c) => c.word)
    engine.turnPage(1)
    expect(engine.page.value).toBe(1)
    expect(engine.paged.value.items.map((c) => c.word)).not.toEqual(first)
    engine.turnPage(-5)
    expect(engine.page.value).toBe(0)
    engine.press('{enter}') // Enter types the letters themselves, it does not ask yet
    expect(out.text).toBe('shi')
    expect(out.sent).toBe(0)
  })

  it('the language and hide keys end the pinyin first', () => {
    const { out, engine, type } = rig('zh')
    type('ni')
    engine.press('{lang}')
    expect(out).toMatchObject({ text: 'ni', switched: 1 })
    engine.press('{hide}')
    expect(out.hidden).toBe(1)
  })
})

describe('when the keyboard shows', () => {
  const base = { mode: 'auto' as const, focused: true, touch: true, physicalKey: false, dismissed: false }
  it('auto: focused and touched, until a real key is pressed', () => {
    expect(keyboardVisible(base)).toBe(true)
    expect(keyboardVisible({ ...base, touch: false })).toBe(false)
    expect(keyboardVisible({ ...base, focused: false })).toBe(false)
    expect(keyboardVisible({ ...base, physicalKey: true })).toBe(false)
  })
  it('always and off, and the hide key', () => {
    expect(keyboardVisible({ ...base, mode: 'always', focused: false, touch: false, physicalKey: true })).toBe(true)
    expect(keyboardVisible({ ...base, mode: 'off' })).toBe(false)
    expect(keyboardVisible({ ...base, mode: 'always', dismissed: true })).toBe(false)
  })
  it('reads the mode from the address', () => {
    expect(queryMode('?keyboard=always')).toBe('always')
    expect(queryMode('?x=1')).toBeNull()
    expect(parseMode('sometimes')).toBeNull()
  })
})

describe('editing at the caret', () => {
  it('inserts over a selection within the limit', () => {
    expect(insertAt('abcd', 'XY', 1, 3, 10)).toEqual({ text: 'aXYd', caret: 3 })
    expect(insertAt('abc', '图书馆', 3, 3, 5)).toEqual({ text: 'abc图书', caret: 5 })
  })
  it('backspace removes a selection, a character or a whole emoji', () => {
    expect(deleteBefore('abcd', 1, 3)).toEqual({ text: 'ad', caret: 1 })
    expect(deleteBefore('ab', 2, 2)).toEqual({ text: 'a', caret: 1 })
    expect(deleteBefore('a😀', 3, 3)).toEqual({ text: 'a', caret: 1 })
    expect(deleteBefore('', 0, 0)).toEqual({ text: '', caret: 0 })
  })
})
