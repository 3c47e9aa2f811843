// What the on-screen keys do: letters and marks go to the question box, or in Chinese into a pinyin buffer
// that offers word candidates; picking one types it and leaves any rest of the pinyin to convert next.
import { computed, ref, shallowRef, type Ref } from 'vue'
import type { Lang } from '../i18n'
import { FULL_WIDTH, type Layer } from './layouts'
import { loadPinyinIndex, pageOf, type Candidate, type PinyinIndex } from './pinyin'

export interface KeyboardSink {
  insert(text: string): void
  backspace(): void
  enter(): void
  switchLanguage(): void
  hide(): void
}

export const PAGE_SIZE = 6

/** `pageSize`: candidates shown at once (more fit on a wide screen). */
export function useKeyboardEngine(lang: Ref<Lang>, sink: KeyboardSink, pageSize = PAGE_SIZE) {
  const layer = ref<Layer>('default')
  const buffer = ref('')
  const page = ref(0)
  const index = shallowRef<PinyinIndex | null>(null)

  const all = computed<Candidate[]>(() => (index.value && buffer.value ? index.value.lookup(buffer.value) : []))
  const paged = computed(() => pageOf(all.value, page.value, pageSize))

  function ensureIndex(): void {
    if (!index.value) void loadPinyinIndex().then((loaded) => (index.value = loaded))
  }
  if (lang.value === 'zh') ensureIndex()

  function setBuffer(next: string): void {
    buffer.value = next
    page.value = 0
  }

  /** Types what the buffer holds as letters (Enter, a mark or a language switch ends the pinyin). */
  function flush(): void {
    if (buffer.value) sink.insert(buffer.value)
    setBuffer('')
  }

  function pick(candidate: Candidate): void {
    sink.insert(candidate.word)
    setBuffer(buffer.value.slice(candidate.consumed))
  }

  function typeChar(ch: string): void {
    if (lang.value === 'zh' && /^[a-z]$/.test(ch)) {
      ensureIndex()
      setBuffer(buffer.value + ch)
      return
    }
    flush()
    sink.insert(lang.value === 'zh' ? (FULL_WIDTH[ch] ?? ch) : ch)
    if (layer.value === 'shift') layer.value = 'default'
  }

  function backspace(): void {
    if (buffer.value) setBuffer(buffer.value.slice(0, -1))
    else sink.backspace()
  }

  function space(): void {
    const first = all.value[0]
    if (buffer.value && first) pick(first)
    else if (buffer.value) flush()
    else sink.insert(' ')
  }

  function enter(): void {
    if (buffer.value) flush()
    else sink.enter()
  }

  const SPECIAL: Record<string, () => void> = {
    '{bksp}': backspace,
    '{space}': space,
    '{enter}': enter,
    '{shift}': () => (layer.value = layer.value === 'shift' ? 'default' : 'shift'),
    '{symbols}': () => (layer.value = 'symbols'),
    '{abc}': () => (layer.value = 'default'),
    '{lang}': () => {
      flush()
      sink.switchLanguage()
    },
    '{hide}': () => {
      flush()
      sink.hide()
    },
  }

  function press(button: string): void {
    const special = SPECIAL[button]
    if (special) special()
    else if (button) typeChar(button)
  }

  function turnPage(delta: number): void {
    page.value = Math.min(Math.max(0, page.value + delta), paged.value.pages - 1)
  }

  return { layer, buffer, page, paged, loaded: computed(() => index.value !== null), press, pick, turnPage, flush, ensureIndex }
}
