"""OpenAI-style errors: one exception type, one body shape, and the handlers that turn everything into it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

# HTTP status -> OpenAI's error type
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    """An error the client gets as `{"error": {"message", "type", "param", "code"}}` with `status`.

    Args:
        status (`int`): the HTTP status (4xx for the client's mistakes, 503 when the server cannot serve now).
        message (`str`): what went wrong and what to do.
        param (`str`, *optional*): the request field at fault.
        code (`str`, *optional*): a stable machine-readable code (e.g. `"context_length_exceeded"`).
        headers (`dict`, *optional*): extra response headers (e.g. `Retry-After`).
    """

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """The OpenAI error body."""
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(error.status, error.message, error.param, error.code),
        status_code=error.status,
        headers=error.headers,
    )


def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    kind = first.get("type", "invalid_value")
    if kind == "json_invalid":
        return error_response(
            APIError(400, f"The body is not valid JSON: {first.get('msg', '')}.", code="invalid_json")
        )
    param = ".".join(loc) or None
    message = first.get("msg", "Invalid request")
    if kind == "extra_forbidden":
        message = f"Unknown field {param!r}: this endpoint does not take it."
    elif kind == "missing":
        message = f"The field {param!r} is required."
    elif param:
        message = f"{param}: {message}"
    return error_response(APIError(400, message, param=param, code=kind))


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as an OpenAI error body: validation errors as 400, HTTP errors with their status, a
    `ValueError` from the model (bad input it caught) as 400, anything else as a logged 500."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return _validation_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"No route {request.url.path} on this server (see GET /health for what it serves)."
        return error_response(APIError(exc.status_code, message, headers=getattr(exc, "headers", None)))

    @app.exception_handler(ValueError)
    async def _value(request: Request, exc: ValueError):
        return error_response(APIError(400, str(exc), code="invalid_value"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logger.exception("unexpected error serving %s", request.url.path)
        return error_response(APIError(500, f"Internal error ({type(exc).__name__}); see the server log."))
