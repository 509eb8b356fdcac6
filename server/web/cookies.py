"""The session cookies: ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, no ``Domain``;
``Secure`` with the ``__Host-`` prefix when ``PUBLIC_URL`` is https (a browser refuses
``__Host-`` cookies over plain http, which the local demo uses).
"""

from __future__ import annotations

from starlette.responses import Response

from server.settings import Settings


def staff_cookie_name(settings: Settings) -> str:
    return "__Host-sc_staff" if settings.secure_cookies else "sc_staff"


def set_staff(response: Response, settings: Settings, token: str) -> None:
    # No max-age: a session cookie, gone when the browser closes; the server enforces
    # the idle and absolute limits whatever the browser keeps.
    response.set_cookie(staff_cookie_name(settings), token, path="/", httponly=True,
                        samesite="strict", secure=settings.secure_cookies)


def clear_staff(response: Response, settings: Settings) -> None:
    response.delete_cookie(staff_cookie_name(settings), path="/", httponly=True,
                           samesite="strict", secure=settings.secure_cookies)


def patient_cookie_name(settings: Settings) -> str:
    return "__Host-sc_patient" if settings.secure_cookies else "sc_patient"


def set_patient(response: Response, settings: Settings, token: str) -> None:
    response.set_cookie(patient_cookie_name(settings), token, path="/", httponly=True,
                        samesite="strict", secure=settings.secure_cookies)


def clear_patient(response: Response, settings: Settings) -> None:
    response.delete_cookie(patient_cookie_name(settings), path="/", httponly=True,
                           samesite="strict", secure=settings.secure_cookies)
