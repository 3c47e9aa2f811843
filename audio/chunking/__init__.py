"""The parts of `audio.chunker`'s SentenceChunker, one stage or rule set per module; use `audio.chunker` itself.

- `chunks`: what goes in and out (SpeechChunk, ChunkerConfig).
- `lines`: what a line is, from its first characters (prose, code fence, table row, blank).
- `markdown`: the inline Markdown/HTML stripper for prose lines.
- `sentences`: the splitter that collapses whitespace and cuts plain text at sentence ends.
- `abbreviations`: the English rules for a ". " that does not end a sentence.
- `chars`: character classes shared by the stages.
"""
