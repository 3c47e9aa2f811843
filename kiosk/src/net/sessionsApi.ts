// The daemon's session history API (docs/protocol.md, "Session history API").
import type { StoredTurn } from '../chat/store'

export interface SessionSummary {
  id: string
  title: string
  createdAt: string
  updatedAt: string
  turnCount: number
}

export interface SessionDetail extends SessionSummary {
  turns: StoredTurn[]
}

/** The headers that say whose conversations these are: the screen's visit, or an unlocked operator. */
export type Auth = Record<string, string>

export const VISIT_HEADER = 'X-Kioskd-Visit'
export const OPERATOR_HEADER = 'X-Kioskd-Operator'

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    /** The rest of the error body (e.g. `attempts_left`), and Retry-After in seconds when sent. */
    readonly body: Record<string, unknown> = {},
    readonly retryAfter: number | null = null,
  ) {
    super(`${status} ${code}`)
  }
}

type Raw = Record<string, unknown>

async function errorOf(response: Response): Promise<ApiError> {
  let code = 'http_error'
  let body: Raw = {}
  try {
    const parsed = (await response.json()) as { error?: Raw }
    if (parsed.error && typeof parsed.error === 'object') body = parsed.error
    if (typeof body.code === 'string') code = body.code
  } catch {
    // not JSON: keep the generic code
  }
  const retry = Number(response.headers.get('Retry-After') ?? body.retry_after)
  return new ApiError(response.status, code, body, Number.isFinite(retry) && retry > 0 ? retry : null)
}

export async function request(path: string, init: RequestInit = {}, auth: Auth = {}): Promise<Response> {
  const headers = { ...auth, ...((init.headers as Record<string, string> | undefined) ?? {}) }
  const response = await fetch(path, { cache: 'no-store', ...init, headers })
  if (!response.ok) throw await errorOf(response)
  return response
}

function summary(raw: Raw): SessionSummary {
  return {
    id: String(raw.id ?? ''),
    title: typeof raw.title === 'string' ? raw.title : '',
    createdAt: String(raw.created_at ?? ''),
    updatedAt: String(raw.updated_at ?? raw.created_at ?? ''),
    turnCount: typeof raw.turn_count === 'number' ? raw.turn_count : 0,
  }
}

function turn(raw: Raw): StoredTurn {
  return {
    role: raw.role === 'user' ? 'user' : 'assistant',
    content: typeof raw.content === 'string' ? raw.content : '',
    status: typeof raw.status === 'string' ? raw.status : 'complete',
  }
}

export async function listSessions(auth: Auth, limit = 100): Promise<SessionSummary[]> {
  const response = await request(`/api/sessions?limit=${limit}&offset=0`, {}, auth)
  const body = (await response.json()) as { sessions?: Raw[] }
  return (body.sessions ?? []).map(summary).filter((s) => s.id !== '')
}

export async function getSession(id: string, auth: Auth): Promise<SessionDetail> {
  const body = (await (await request(`/api/sessions/${encodeURIComponent(id)}`, {}, auth)).json()) as Raw
  const turns = Array.isArray(body.turns) ? (body.turns as Raw[]).map(turn) : []
  return { ...summary(body), turns }
}

export async function deleteSession(id: string, auth: Auth): Promise<void> {
  await request(`/api/sessions/${encodeURIComponent(id)}`, { method: 'DELETE' }, auth)
}
