import { createApp } from 'vue'
import App from './App.vue'
import { applyDocumentLanguage } from './i18n'
import { installTouchGuard } from './touchGuard'
import './styles/base.css'
import './styles/layout.css'
import './styles/messages.css'
import './styles/markdown.css'
import './styles/drawer.css'
import './styles/visit.css'

applyDocumentLanguage() // <html lang> for the detected language before the first paint
installTouchGuard()
createApp(App).mount('#app')
