//! An HTTP receiver in the test process (webhooks, hooks): listens on 127.0.0.1 port 0,
//! records every request (path, body, JSON, headers) with the status it was answered with,
//! and answers through the test's closure, possibly after a delay or a signal.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// One request the receiver got, and the status it answered with.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub body: String,
    pub json: Value,
    pub headers: Vec<(String, String)>,
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Answered 2xx (or still being answered, after its status was chosen).
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The closure's answer: a status, an optional JSON body, and optionally something to
/// wait for before answering (the request is recorded before that wait).
pub struct Answer {
    status: u16,
    json: Option<Value>,
    after: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

impl Answer {
    pub fn ok() -> Self {
        Self::status(200)
    }

    pub fn status(status: u16) -> Self {
        Self {
            status,
            json: None,
            after: None,
        }
    }

    pub fn json(json: Value) -> Self {
        Self {
            json: Some(json),
            ..Self::ok()
        }
    }

    /// Answers only once `wait` is done.
    pub fn after(mut self, wait: impl Future<Output = ()> + 'static) -> Self {
        self.after = Some(Box::pin(wait));
        self
    }
}

pub struct Receiver {
    base: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    /// A receiver answering 200 with an empty body to everything.
    pub fn start() -> Self {
        Self::answering(|_| Answer::ok())
    }

    /// A receiver answering each request with `answer(&request)`.
    pub fn answering(answer: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> Self {
        let answer = Arc::new(answer);
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let kept = requests.clone();
        let server = actix_web::HttpServer::new(move || {
            let (kept, answer) = (kept.clone(), answer.clone());
            actix_web::App::new().default_service(web::to(
                move |request: HttpRequest, body: web::Bytes| {
                    let (kept, answer) = (kept.clone(), answer.clone());
                    async move {
                        let body = String::from_utf8_lossy(&body).into_owned();
                        let mut request = Request {
                            path: request.path().to_owned(),
                            json: serde_json::from_str(&body).unwrap_or(Value::Null),
                            body,
                            headers: request
                                .headers()
                                .iter()
                                .map(|(n, v)| {
                                    (n.to_string(), v.to_str().unwrap_or_default().to_owned())
                                })
                                .collect(),
                            status: 0,
                        };
                        let Answer {
                            status,
                            json,
                            after,
                        } = answer(&request);
                        request.status = status;
                        kept.lock().unwrap().push(request);
                        if let Some(after) = after {
                            after.await;
                        }
                        let mut reply = HttpResponse::build(
                            actix_web::http::StatusCode::from_u16(status).expect("a valid status"),
                        );
                        match json {
                            Some(json) => reply.json(json),
                            None => reply.finish(),
                        }
                    }
                },
            ))
        })
        .workers(2)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("the receiver binds");
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        Self {
            base: format!("http://127.0.0.1:{port}"),
            requests,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every request, in arrival order, whatever it was answered.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests answered 2xx, in arrival order.
    pub fn accepted(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(Request::accepted)
            .collect()
    }

    /// The JSON bodies of the accepted requests, in arrival order.
    pub fn accepted_json(&self) -> Vec<Value> {
        self.accepted().into_iter().map(|r| r.json).collect()
    }

    /// How many requests were answered 500.
    pub fn refused(&self) -> usize {
        self.requests().iter().filter(|r| r.status == 500).count()
    }

    /// The requests to `path`, in arrival order, whatever they were answered.
    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

/// `request` carries a fresh `X-Blnk-Timestamp` and the `X-Blnk-Signature` of its body
/// with `secret`.
pub fn assert_signed(request: &Request, secret: &str) {
    let timestamp: i64 = request
        .header("x-blnk-timestamp")
        .expect("X-Blnk-Timestamp")
        .parse()
        .expect("unix seconds");
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 120);
    let expected = coffer_actors::events::signature(secret.as_bytes(), timestamp, &request.body);
    assert_eq!(request.header("x-blnk-signature"), Some(expected.as_str()));
}
