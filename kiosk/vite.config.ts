/// <reference types="vitest/config" />
// The page is served by kioskd under a strict Content-Security-Policy (script-src/style-src 'self'), so the
// build must emit only same-origin files: no inlined assets, no inline scripts or styles in index.html.
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

export default defineConfig({
  base: '/',
  plugins: [vue()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    sourcemap: false,
    cssCodeSplit: false,
    // The polyfill is tiny but unnecessary: the kiosk runs a current Chromium.
    modulePreload: { polyfill: false },
    target: 'es2020',
  },
  test: {
    environment: 'jsdom',
    include: ['tests/**/*.test.ts'],
  },
})
