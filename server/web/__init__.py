"""Thin Starlette routes. Only this package and ``server.app`` import Starlette."""
