//! Protocol upgrades: a real WebSocket exchange through the proxy, after the route check.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// A WebSocket echo server; answers every text frame with "echo: <text>".
async fn ws_echo() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(t) => {
                            let _ = ws.send(Message::text(format!("echo: {t}"))).await;
                        }
                        Message::Binary(b) => {
                            let _ = ws.send(Message::Binary(b)).await;
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_passes_through_a_public_route() {
    let upstream = ws_echo().await;
    let routes =
        "[[routes]]\npath = \"/ws/**\"\nauth = \"public\"\n[[routes]]\npath = \"/private/**\"\n";
    let gate = Gate::start(&config(&format!("http://{upstream}"), routes)).await;

    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", gate.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply, Message::text(format!("echo: hello {i}")));
    }
    let big = vec![7u8; 256 * 1024];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn websocket_upgrade_is_refused_before_the_route_check_passes() {
    let upstream = ws_echo().await;
    let routes =
        "[[routes]]\npath = \"/ws/**\"\nauth = \"public\"\n[[routes]]\npath = \"/private/**\"\n";
    let gate = Gate::start(&config(&format!("http://{upstream}"), routes)).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/private/chat", gate.addr))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("expected an HTTP 401, got {other:?}"),
    }
}
