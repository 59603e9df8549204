// SPDX-License-Identifier: MPL-2.0
//! The HTTP side of the local KVS server: connections, routing, SigV4
//! checks, and the stream APIs (CreateStream, DescribeStream, DeleteStream).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::wire::{Body, KvsError, error, full, invalid};
use super::{State, Stream, archive, getmedia, put, sigv4};

pub async fn serve(listener: tokio::net::TcpListener, state: Arc<State>, addr: SocketAddr) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(state.clone(), addr, req));
            let io = hyper_util::rt::TokioIo::new(tcp);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

fn access_key(state: &State, parts: &Parts, body: &[u8]) -> Result<String, KvsError> {
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(sigv4::parse)
        .filter(|a| a.service == "kinesisvideo" && parts.headers.contains_key("x-amz-date"));
    let Some(auth) = auth else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Requests must be signed with AWS Signature Version 4 for the kinesisvideo service"
                .into(),
        ));
    };
    if let Some(secret) = state.secrets.get(auth.key) {
        sigv4::verify(parts, body, &auth, secret)
            .map_err(|msg| error(StatusCode::FORBIDDEN, "InvalidSignatureException", msg))?;
    }
    Ok(auth.key.to_string())
}

async fn handle(
    state: Arc<State>,
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    state.faults.unpaused().await;
    Ok(reply(state, addr, req)
        .await
        .unwrap_or_else(KvsError::response))
}

async fn reply(
    state: Arc<State>,
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, KvsError> {
    let (parts, body) = req.into_parts();
    let media = ["/getMedia", "/getMediaForFragmentList", "/putMedia"];
    if media.contains(&parts.uri.path()) && super::take(&state.faults.unanswered) {
        state.counters.unanswered.fetch_add(1, Ordering::SeqCst);
        // Taken, and never answered: the client's deadline must end it.
        return std::future::pending().await;
    }
    if parts.uri.path() == "/putMedia" {
        // A streaming body, signed as the KVS producers sign it: with the
        // hash of an empty payload.
        let key = access_key(&state, &parts, &[])?;
        refuse_denied(&state, &key)?;
        return put::put_media(&state, &parts, body);
    }
    let body = body
        .collect()
        .await
        .map_err(|e| invalid(format!("Could not read the request: {e}")))?
        .to_bytes();
    let key = access_key(&state, &parts, &body)?;
    let path = parts.uri.path();
    let json: Value = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("The request is not JSON: {e}")))?;
    refuse_denied(&state, &key)?;
    match path {
        "/createStream" => return create_stream(&state, &json),
        "/deleteStream" => return delete_stream(&state, &json),
        "/describeStream" => return describe_stream(&state, &json),
        _ => {}
    }
    let name = json["StreamName"].as_str();
    let arn = json["StreamARN"].as_str();
    let Some(stream) = state.stream(name, arn) else {
        let which = name.or(arn).unwrap_or("(no StreamName or StreamARN)");
        let msg = format!("The stream {which} does not exist");
        return Err(error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            msg,
        ));
    };
    match path {
        "/getDataEndpoint" => {
            state
                .counters
                .get_data_endpoint
                .fetch_add(1, Ordering::SeqCst);
            let body = json!({ "DataEndpoint": format!("http://{addr}") }).to_string();
            Ok(full(StatusCode::OK, "application/json", body.into_bytes()))
        }
        "/getMedia" => getmedia::get_media(&state, stream, &json["StartSelector"]),
        "/listFragments" => archive::list_fragments(&state, &stream, &json),
        "/getMediaForFragmentList" => archive::get_media_for_fragment_list(&state, stream, &json),
        other => {
            let msg = format!("No operation at {other}");
            Err(error(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                msg,
            ))
        }
    }
}

fn refuse_denied(state: &State, key: &str) -> Result<(), KvsError> {
    if !state.denied_keys.iter().any(|k| k == key) {
        return Ok(());
    }
    let msg = format!("The access key {key} is not authorized to perform this operation");
    Err(error(
        StatusCode::UNAUTHORIZED,
        "NotAuthorizedException",
        msg,
    ))
}

fn ok_json(body: Value) -> Result<Response<Body>, KvsError> {
    Ok(full(
        StatusCode::OK,
        "application/json",
        body.to_string().into_bytes(),
    ))
}

/// CreateStream: an empty stream that producers can put into.
fn create_stream(state: &State, req: &Value) -> Result<Response<Body>, KvsError> {
    state.counters.create_stream.fetch_add(1, Ordering::SeqCst);
    let name = req["StreamName"]
        .as_str()
        .filter(|n| !n.is_empty() && n.len() <= 256)
        .ok_or_else(|| invalid("StreamName is required"))?;
    let hours = req["DataRetentionInHours"].as_u64().unwrap_or(0);
    let stream = Stream::empty(name, hours.min(87_600) as u32);
    *stream.media_type.lock().unwrap() = req["MediaType"].as_str().unwrap_or("").into();
    let arn = stream.arn.clone();
    if !state.add_stream(stream) {
        let msg = format!("The stream {name} already exists");
        return Err(error(
            StatusCode::BAD_REQUEST,
            "ResourceInUseException",
            msg,
        ));
    }
    ok_json(json!({ "StreamARN": arn }))
}

/// DeleteStream: the stream named by its ARN goes, with its fragments.
fn delete_stream(state: &State, req: &Value) -> Result<Response<Body>, KvsError> {
    let arn = req["StreamARN"]
        .as_str()
        .ok_or_else(|| invalid("StreamARN is required"))?;
    if !state.remove_stream(arn) {
        let msg = format!("The stream {arn} does not exist");
        return Err(error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            msg,
        ));
    }
    ok_json(json!({}))
}

/// DescribeStream: what the stream is, or ResourceNotFoundException.
fn describe_stream(state: &State, req: &Value) -> Result<Response<Body>, KvsError> {
    let name = req["StreamName"].as_str();
    let Some(stream) = state.stream(name, req["StreamARN"].as_str()) else {
        let which = name.or(req["StreamARN"].as_str()).unwrap_or("?");
        let msg = format!("The stream {which} does not exist");
        return Err(error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            msg,
        ));
    };
    ok_json(json!({ "StreamInfo": {
        "StreamName": stream.name,
        "StreamARN": stream.arn,
        "MediaType": *stream.media_type.lock().unwrap(),
        "Status": "ACTIVE",
        "Version": "1",
        "CreationTime": 1_700_000_000.0,
        "DataRetentionInHours": stream.retention_hours.load(Ordering::SeqCst),
    }}))
}
