//! The OTLP/HTTP span exporter and the small HTTP client it sends with.
//!
//! The batch span processor exports on its own thread (it drives the export future with a
//! blocking executor), so the client does plain blocking I/O there: one `POST` per batch over
//! a fresh connection (`Connection: close`), TLS through rustls with the ring provider (already
//! built for the database driver) and the Mozilla roots. No reqwest/hyper stack, and no
//! process-wide rustls provider to install.

use async_trait::async_trait;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Per attempt: connect, send and receive (`OTEL_EXPORTER_OTLP_TIMEOUT` bounds the export).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response read (collectors answer with a few bytes).
const RESPONSE_BYTES_MAX: u64 = 1024 * 1024;

/// A tracer provider exporting to `endpoint` (or to what `OTEL_EXPORTER_OTLP_*` says).
pub(super) fn provider(endpoint: Option<&str>, service: &str) -> Result<SdkTracerProvider, String> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(BlockingClient::default());
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let exporter = builder.build().map_err(|e| e.to_string())?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

#[derive(Debug, Default)]
struct BlockingClient {
    tls: OnceLock<Arc<rustls::ClientConfig>>,
}

#[async_trait]
impl HttpClient for BlockingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        // Runs on the batch span processor's thread: blocking here blocks nothing else.
        self.post(request)
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl BlockingClient {
    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, HttpError> {
        if let Some(config) = self.tls.get() {
            return Ok(config.clone());
        }
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(self.tls.get_or_init(|| Arc::new(config)).clone())
    }

    fn post(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let uri = request.uri().clone();
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            other => return Err(format!("unsupported OTLP endpoint scheme {other:?}").into()),
        };
        let host = uri.host().ok_or("OTLP endpoint has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let address = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or("OTLP endpoint host did not resolve")?;
        let tcp = TcpStream::connect_timeout(&address, IO_TIMEOUT)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        let mut stream: Box<dyn Stream> = if https {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
            let connection = rustls::ClientConnection::new(self.tls_config()?, name)?;
            Box::new(rustls::StreamOwned::new(connection, tcp))
        } else {
            Box::new(tcp)
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri.authority().map_or(host, |a| a.as_str());
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n",
            request.body().len()
        );
        for (name, value) in request.headers() {
            if name == "host" || name == "content-length" || name == "connection" {
                continue;
            }
            head.push_str(name.as_str());
            head.push_str(": ");
            head.push_str(value.to_str()?);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(request.body())?;
        stream.flush()?;
        let mut raw = Vec::new();
        match stream.take(RESPONSE_BYTES_MAX).read_to_end(&mut raw) {
            Ok(_) => {}
            // A TLS peer closing without close_notify after a complete response.
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(error) => return Err(error.into()),
        }
        parse_response(&raw)
    }
}

/// Status, headers and body of an HTTP/1.x response read to the end.
fn parse_response(raw: &[u8]) -> Result<Response<Bytes>, HttpError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("incomplete HTTP response from the OTLP endpoint")?;
    let head = std::str::from_utf8(&raw[..split])?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or("bad HTTP status line from the OTLP endpoint")?;
    let mut builder = Response::builder().status(status);
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            chunked |= name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked");
            builder = builder.header(name, value);
        }
    }
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body).unwrap_or_default()
    } else {
        body.to_vec()
    };
    Ok(builder.body(Bytes::from(body))?)
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed_plain_and_chunked() {
        let plain = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!(plain.status(), 200);
        assert_eq!(plain.body().as_ref(), b"hi");
        let chunked = parse_response(
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.status(), 400);
        assert_eq!(chunked.body().as_ref(), b"abcd");
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }

    #[test]
    fn posts_to_a_local_endpoint() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut received = Vec::new();
            let mut buffer = [0u8; 4096];
            while !received.ends_with(b"payload") {
                let n = socket.read(&mut buffer).unwrap();
                assert!(n > 0, "request ended early");
                received.extend_from_slice(&buffer[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            String::from_utf8(received).unwrap()
        });
        let request = Request::builder()
            .method("POST")
            .uri(format!("http://127.0.0.1:{port}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(Bytes::from_static(b"payload"))
            .unwrap();
        let response = BlockingClient::default().post(request).unwrap();
        assert_eq!(response.status(), 200);
        let received = server.join().unwrap();
        assert!(
            received.starts_with("POST /v1/traces HTTP/1.1\r\n"),
            "{received}"
        );
        assert!(received.contains("content-type: application/x-protobuf\r\n"));
        assert!(received.contains("Content-Length: 7\r\n"));
    }
}
