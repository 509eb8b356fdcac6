"""The session cookies: ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, no ``Domain``;
``Secure`` with the ``__Host-`` prefix when ``PUBLIC_URL`` is https (a browser refuses
``__Host-`` cookies over plain http, which the local demo uses). No max-age: session
cookies, gone when the browser closes; the server enforces the idle and absolute limits
whatever the browser keeps.
"""

from __future__ import annotations

from starlette.responses import Response

from server.settings import Settings


def _name(settings: Settings, base: str) -> str:
    return f"__Host-{base}" if settings.secure_cookies else base


def _set(response: Response, settings: Settings, base: str, token: str) -> None:
    response.set_cookie(_name(settings, base), token, path="/", httponly=True,
                        samesite="strict", secure=settings.secure_cookies)


def _clear(response: Response, settings: Settings, base: str) -> None:
    response.delete_cookie(_name(settings, base), path="/", httponly=True,
                           samesite="strict", secure=settings.secure_cookies)


def staff_cookie_name(settings: Settings) -> str:
    return _name(settings, "sc_staff")


def set_staff(response: Response, settings: Settings, token: str) -> None:
    _set(response, settings, "sc_staff", token)


def clear_staff(response: Response, settings: Settings) -> None:
    _clear(response, settings, "sc_staff")


def patient_cookie_name(settings: Settings) -> str:
    return _name(settings, "sc_patient")


def set_patient(response: Response, settings: Settings, token: str) -> None:
    _set(response, settings, "sc_patient", token)


def clear_patient(response: Response, settings: Settings) -> None:
    _clear(response, settings, "sc_patient")
