//! Walks whose responses are streamed (`format = "ndjson"` or `"csv"`): a
//! body of any size is read as it arrives, on a blocking thread bridged to
//! the response (tokio-util's `SyncIoBridge`), and handed over
//! [`PAGE_RECORDS`] records at a time through a channel of two, so memory
//! stays flat. Each part's resume point is the same request with
//! [`Resume::skip`] records already stored; a resumed walk asks again and
//! skips them. A body cut short or garbled is asked for again the same way, up to
//! `[source.retry] max_attempts`. After the body, the paginator says where
//! the walk goes next (headers, the URL, the last record); a response with
//! no record ends it.

use std::sync::atomic::Ordering;

use futures::StreamExt;
use serde_json::Value;

use super::formats::{Flow, Layout, read_records};
use super::http::Response;
use super::{HttpError, HttpSource, Page, PageStream, Partition, Resume};
use crate::config::source::ResponseFormat;

/// Records per page of a streamed body.
pub const PAGE_RECORDS: usize = 1000;

/// What one streamed response gave.
struct Streamed {
    headers: reqwest::header::HeaderMap,
    url: url::Url,
    /// Records in the whole body (the skipped ones included).
    records: u64,
    last: Option<Value>,
}

impl HttpSource {
    /// Whether this source's bodies are streamed.
    pub(super) fn streams(&self) -> bool {
        matches!(
            self.cfg.format,
            ResponseFormat::Ndjson | ResponseFormat::Csv
        )
    }

    /// Walk one partition, streaming each response.
    pub(super) fn walk_streamed(&self, part: Partition, resume: Option<Resume>) -> PageStream {
        let this = self.clone();
        Box::pin(async_stream::try_stream! {
            let base = this.base_url(&part)?;
            let body = this.body(&part);
            let depends = Some(this.depends(&part));
            let mut st = resume.unwrap_or_else(|| this.fresh(&depends));
            st.depends = depends.clone();
            loop {
                if this.paginator.max_pages().is_some_and(|m| st.pages >= m) {
                    yield this.done(&part);
                    return;
                }
                let pos = st.position.clone();
                let req = this.paginator.request(&base, body.as_ref(), &pos).map_err(HttpError::Client)?;
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Page>(2);
                let reading = this.read_response(&part, req, st.clone(), tx);
                futures::pin_mut!(reading);
                let mut got: Option<Result<Streamed, HttpError>> = None;
                // pages as they come, while the response is read
                loop {
                    let page = tokio::select! {
                        page = rx.recv() => page,
                        done = &mut reading, if got.is_none() => {
                            got = Some(done);
                            continue;
                        }
                    };
                    let Some(page) = page else { break };
                    if let Some(r) = &page.resume {
                        st = r.clone();
                    }
                    yield page;
                }
                let done = match got { Some(d) => d, None => reading.await };
                let done = done?;
                let resp = Response {
                    url: done.url,
                    headers: done.headers,
                    body: Value::Null,
                    picked: serde_json::Map::new(),
                };
                let sample: Vec<Value> = done.last.into_iter().collect();
                let next = this.paginator.next(&pos, &resp, &sample).map_err(|m| HttpError::Body {
                    url: this.client.show(&resp.url),
                    message: m,
                })?;
                let next = next.filter(|_| done.records > 0);
                let Some(next) = next else {
                    yield this.done(&part);
                    return;
                };
                st.position = next.clone();
                st.skip = 0;
                // the part that moves the walk to the next response
                yield Page {
                    partition: part.key.clone(),
                    records: Vec::new(),
                    resume: Some(st.clone()),
                    url: this.client.show(&resp.url),
                    failure: None,
                    cursor: None,
                };
            }
        })
    }

    /// Ask for one response and stream its records to `tx` as pages whose
    /// resume points stay on this request; a body cut short or garbled is
    /// asked for again, skipping what was handed over.
    async fn read_response(
        &self,
        part: &Partition,
        req: super::pagination::Request,
        mut st: Resume,
        tx: tokio::sync::mpsc::Sender<Page>,
    ) -> Result<Streamed, HttpError> {
        let csv = self.cfg.format == ResponseFormat::Csv;
        let mut attempt = 1;
        loop {
            let (resp, url) = self.client.open(&req).await?;
            let headers = resp.headers().clone();
            let shown = self.client.show(&url);
            let bytes = resp
                .bytes_stream()
                .map(|r| r.map_err(|e| std::io::Error::other(e.without_url())));
            let reader =
                tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(bytes));
            let (pages_tx, mut pages_rx) = tokio::sync::mpsc::channel::<Vec<Value>>(2);
            let skip = st.skip;
            let layout = if csv {
                Layout::Csv {
                    delimiter: b',',
                    names: None,
                }
            } else {
                Layout::Ndjson
            };
            let parse = tokio::task::spawn_blocking(move || pages(reader, layout, skip, &pages_tx));
            let mut last = None;
            while let Some(records) = pages_rx.recv().await {
                let n = records.len() as u64;
                st.skip += n;
                st.pages += 1;
                st.records += n;
                self.metrics.pages.fetch_add(1, Ordering::Relaxed);
                self.metrics.records.fetch_add(n, Ordering::Relaxed);
                last = records.last().cloned();
                let page = Page {
                    partition: part.key.clone(),
                    records,
                    resume: Some(st.clone()),
                    url: shown.clone(),
                    failure: None,
                    cursor: None,
                };
                if tx.send(page).await.is_err() {
                    break;
                }
            }
            let outcome = parse.await.map_err(|e| HttpError::Body {
                url: shown.clone(),
                message: format!("the reading task failed: {e}"),
            })?;
            match outcome {
                Ok(records) => {
                    return Ok(Streamed {
                        headers,
                        url,
                        records,
                        last,
                    });
                }
                // cut short or garbled: worth another try, like a JSON body
                Err(m) if attempt < self.cfg.retry.max_attempts => {
                    attempt += 1;
                    self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %shown, attempt, stored = st.skip, "{m}; asking again and skipping what was read");
                }
                Err(m) => {
                    return Err(HttpError::Body {
                        url: shown,
                        message: self.client.redact(&m),
                    });
                }
            }
        }
    }
}

/// Hand on the records of a streamed body, [`PAGE_RECORDS`] at a time,
/// after the first `skip`; returns the records the body held.
fn pages(
    reader: impl std::io::Read,
    layout: Layout,
    skip: u64,
    tx: &tokio::sync::mpsc::Sender<Vec<Value>>,
) -> Result<u64, String> {
    let (mut n, mut out, mut failed) = (0u64, Vec::with_capacity(PAGE_RECORDS), None);
    let reader = super::formats::without_bom(reader).map_err(|e| e.to_string())?;
    read_records(reader, layout, |record, _, _| {
        n += 1;
        match record {
            Err(m) => {
                failed = Some(format!("record {n} of the body does not parse: {m}"));
                return Flow::Stop;
            }
            Ok(v) if n > skip => out.push(v),
            Ok(_) => {}
        }
        if out.len() >= PAGE_RECORDS && tx.blocking_send(std::mem::take(&mut out)).is_err() {
            return Flow::Stop;
        }
        Flow::Go
    })
    .map_err(|m| format!("the body could not be read: {m}"))?;
    if let Some(m) = failed {
        return Err(m);
    }
    if !out.is_empty() {
        let _ = tx.blocking_send(out);
    }
    Ok(n)
}
