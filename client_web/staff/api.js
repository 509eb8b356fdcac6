// The console's fetch helper: same-origin JSON with the session cookie.
//
//   api.get(path), api.post(path, body), api.put(path, body), api.delete(path)
//
// Each returns the parsed JSON answer (null for 204) or throws an ApiError
// {status, code, message} (status 0 and code "network" when the server is unreachable).
// Pass { background: true } as the last argument for requests the user did not ask for
// (refreshes): they carry `x-securechat-background: 1` and do not extend the session.
//
// Hooks (set by the shell): `onUnauthenticated(error)` when a request answers 401 (the
// session is over: back to sign-in); `onActivity()` after a request that counted as
// user activity (the idle timer restarts from there, as the server's does).

export const BACKGROUND_HEADER = "x-securechat-background";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor() {
    this.onUnauthenticated = null;
    this.onActivity = null;
  }

  get(path, options) { return this.request("GET", path, undefined, options); }
  post(path, body, options) { return this.request("POST", path, body, options); }
  put(path, body, options) { return this.request("PUT", path, body, options); }
  delete(path, options) { return this.request("DELETE", path, undefined, options); }

  async request(method, path, body, { background = false, signOutOn401 = true } = {}) {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (background) headers[BACKGROUND_HEADER] = "1";
    let response;
    try {
      response = await fetch(path, {
        method, headers, credentials: "same-origin", cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, "network", "Can't reach the server. Check your connection.");
    }
    if (response.ok) {
      if (!background && this.onActivity) this.onActivity();
      if (response.status === 204) return null;
      const type = response.headers.get("content-type") || "";
      return type.includes("json") ? response.json() : response.text();
    }
    let code = "http_" + response.status;
    let message = `The server answered ${response.status}.`;
    let retryAfterMs = null;
    try {
      const answer = await response.json();
      if (answer && answer.error) {
        code = answer.error.code || code;
        message = answer.error.message || message;
        retryAfterMs = answer.error.retry_after_ms ?? null;
      }
    } catch {
      // not JSON (a proxy's error page): keep the generic message
    }
    const error = new ApiError(response.status, code, message);
    error.retryAfterMs = retryAfterMs; // rate_limited: when to try again
    if (response.status === 401 && signOutOn401 && this.onUnauthenticated) {
      this.onUnauthenticated(error);
    }
    throw error;
  }
}

// The one instance the console and its admin pages share.
export const api = new Api();
