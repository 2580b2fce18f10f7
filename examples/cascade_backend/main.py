"""The bundled demo CASCADE backend: a FastAPI app with a health endpoint.

As in the incident, main.py does not mount the auth router yet: cascade-ops adds it.
"""

import os

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from store import Store

store = Store(os.environ.get("CASCADE_REDIS_URL"))

app = FastAPI(title="CASCADE backend")


@app.get("/health")
def health():
    # A plain def: FastAPI runs it in a thread, so a slow Redis cannot block the event loop.
    redis = store.status()
    return {"status": "degraded" if redis == "unavailable" else "ok", "redis": redis, "pid": os.getpid()}


@app.websocket("/ws")
async def echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass
