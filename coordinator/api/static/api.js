// The REST API as the dashboard calls it: the admin token the operator typed into the page,
// kept in sessionStorage only (never in the URL, never written to the console).
const KEY = "fedrt-token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function signIn(value) {
  sessionStorage.setItem(KEY, value);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

// JSON from `path`; an ApiError carrying the API's own error type and message otherwise.
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: "Bearer " + (token() || "") };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store", credentials: "omit",
  });
  let data = null;
  try { data = await res.json(); } catch { /* not JSON: reported by status below */ }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(res.status, err.type || "HTTP " + res.status, err.message || res.statusText);
  }
  return data;
}
