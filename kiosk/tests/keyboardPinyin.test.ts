import { beforeAll, describe, expect, it } from 'vitest'
import { PinyinIndex, loadPinyinIndex, normalizePinyin, pageOf } from '../src/keyboard/pinyin'

let index: PinyinIndex
beforeAll(async () => {
  index = await loadPinyinIndex()
})

const words = (typed: string, n = 6) => index.lookup(typed).slice(0, n).map((c) => c.word)

describe('pinyin word candidates from the generated index', () => {
  it.each([
    ['kaifang', '开放'],
    ['shijian', '时间'],
    ['tushuguan', '图书馆'],
    ['xishoujian', '洗手间'],
    ['jidian', '几点'],
    ['zhongguo', '中国'],
  ])('%s offers %s among the first candidates', (typed, word) => {
    expect(words(typed)).toContain(word)
  })

  it('puts whole words before single characters', () => {
    const [first] = index.lookup('kaifang')
    expect(first).toEqual({ word: '开放', consumed: 7 })
  })

  it('finds words from initials and from a partly typed last syllable', () => {
    expect(words('tsg', 3)).toContain('图书馆')
    expect(words('tushug', 3)).toContain('图书馆')
    expect(words('kaif', 3)).toEqual(expect.arrayContaining(['开放', '开发']))
  })

  it('segments a longer input: candidates for its leading part say how much they consume', () => {
    const first = index.lookup('tushuguanjidian')[0]!
    expect(first).toEqual({ word: '图书馆', consumed: 9 })
    expect(index.lookup('jidian')[0]!.word).toBe('几点')
  })

  it('offers common single characters for one syllable, each word once', () => {
    const list = index.lookup('shi')
    expect(list.slice(0, 5).map((c) => c.word)).toContain('是')
    expect(new Set(list.map((c) => c.word)).size).toBe(list.length)
  })

  it('accepts upper case, ü and separators, and gives nothing for nothing', () => {
    expect(normalizePinyin("Kai'fang lü")).toBe('kaifanglv')
    expect(words('LVSE', 3)).toContain('绿色')
    expect(index.lookup('')).toEqual([])
    expect(index.lookup('123')).toEqual([])
  })
})

describe('paging candidates', () => {
  it('splits into pages and clamps the page number', () => {
    const items = Array.from({ length: 14 }, (_, i) => i)
    expect(pageOf(items, 0, 6)).toEqual({ items: [0, 1, 2, 3, 4, 5], pages: 3 })
    expect(pageOf(items, 2, 6)).toEqual({ items: [12, 13], pages: 3 })
    expect(pageOf(items, 9, 6).items).toEqual([12, 13])
    expect(pageOf([], 0, 6)).toEqual({ items: [], pages: 1 })
  })

  it('a common syllable has several pages of distinct candidates', () => {
    const all = index.lookup('shi')
    const first = pageOf(all, 0, 6).items
    const second = pageOf(all, 1, 6).items
    expect(pageOf(all, 0, 6).pages).toBeGreaterThan(3)
    expect(second.some((c) => first.includes(c))).toBe(false)
  })
})

describe('a small hand-made index', () => {
  const small = new PinyinIndex("开 kai\n开放 kai'fang\n开发 kai'fa\n放 fang")
  it('ranks by the order of the data within a kind of match', () => {
    expect(small.lookup('kaifa').map((c) => c.word)).toEqual(['开发', '开放', '开'])
  })
})
