//! One MCAP storage file, read over `Read + Seek` (a `File`, or a `Cursor` in tests).
//!
//! Indexed files (everything rosbag2 and `rosbags` write: chunked, with a summary section)
//! are read chunk by chunk in log-time order with the `mcap` crate's sans-io
//! [`IndexedReader`], so memory stays at a few chunks whatever the file size. A complete file
//! without chunk indexes is read linearly and sorted in memory. A file without its footer
//! (truncated, or a recorder that died) is an error: `mcap recover` repairs such files.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use mcap::records::Record;
use mcap::sans_io::indexed_reader::{IndexedReadEvent, IndexedReader, IndexedReaderOptions};
use mcap::sans_io::linear_reader::{LinearReadEvent, LinearReader};
use mcap::sans_io::summary_reader::{SummaryReadEvent, SummaryReader};
use mcap::{McapError, Summary};

use super::reader::{FileMessage, FileReader, FileTopic};
use super::BagError;

enum Mode {
    /// Chunk indexes present: the indexed reader is created at the first message.
    Indexed {
        summary: Box<Summary>,
        reader: Option<IndexedReader>,
    },
    /// Read linearly at open: (channel, log time, data), sorted by log time.
    Loaded(VecDeque<(u16, u64, Vec<u8>)>),
}

/// See the module docs.
pub struct McapFile<R> {
    path: PathBuf,
    input: R,
    topics: Vec<FileTopic>,
    /// Channel id -> index in `topics`.
    channels: HashMap<u16, usize>,
    /// Topics to yield (indexes in `topics`); all when `None`.
    selected: Option<Vec<bool>>,
    mode: Mode,
    chunk_buf: Vec<u8>,
    time_range: Option<(i64, i64)>,
}

impl<R: Read + Seek> McapFile<R> {
    /// Reads the summary (or, without one, the whole file). `path` names the file in errors.
    pub fn open(mut input: R, path: &Path) -> Result<Self, BagError> {
        let mcap_err = |offset: Option<u64>, source: McapError| BagError::Mcap {
            path: path.to_path_buf(),
            offset,
            source,
        };
        let size = input
            .seek(SeekFrom::End(0))
            .map_err(|e| BagError::io(path, e))?;
        input
            .seek(SeekFrom::Start(0))
            .map_err(|e| BagError::io(path, e))?;
        let mut magic = [0u8; 8];
        if size < 8 || input.read_exact(&mut magic).is_err() || magic != mcap::MAGIC {
            return Err(BagError::NotABag {
                path: path.to_path_buf(),
                reason: format!("no MCAP magic at the start of the file ({size} bytes)"),
            });
        }
        let summary = read_summary(&mut input, size).map_err(|e| match e {
            SummaryError::Io(e) => BagError::io(path, e),
            SummaryError::Mcap(source) => BagError::Truncated {
                path: path.to_path_buf(),
                detail: format!(
                    "no valid footer in the last bytes of the file ({size} bytes): {source}; \
                     a recording that was cut off can be repaired with `mcap recover`"
                ),
            },
        })?;
        let indexed = summary.as_ref().is_some_and(|s| {
            !s.chunk_indexes.is_empty() || s.stats.as_ref().is_some_and(|st| st.message_count == 0)
        });
        let mut file = McapFile {
            path: path.to_path_buf(),
            input,
            topics: Vec::new(),
            channels: HashMap::new(),
            selected: None,
            mode: Mode::Loaded(VecDeque::new()),
            chunk_buf: Vec::new(),
            time_range: None,
        };
        if indexed {
            let summary = summary.expect("checked above");
            let counts = summary
                .stats
                .as_ref()
                .map(|s| s.channel_message_counts.clone());
            let mut ids: Vec<_> = summary.channels.keys().copied().collect();
            ids.sort_unstable();
            for id in ids {
                let ch = &summary.channels[&id];
                let count = counts.as_ref().map(|c| c.get(&id).copied().unwrap_or(0));
                file.add_channel(
                    id,
                    &ch.topic,
                    ch.schema.as_ref().map(|s| s.name.as_str()),
                    &ch.message_encoding,
                    count,
                );
            }
            file.time_range = summary
                .stats
                .as_ref()
                .filter(|s| s.message_count > 0)
                .map(|s| (s.message_start_time as i64, s.message_end_time as i64));
            file.mode = Mode::Indexed {
                summary: Box::new(summary),
                reader: None,
            };
        } else {
            // Unindexed: one linear pass (channels and messages), then sort by log time.
            file.input
                .seek(SeekFrom::Start(0))
                .map_err(|e| BagError::io(path, e))?;
            let mut reader = LinearReader::new();
            let mut consumed: u64 = 0;
            let mut schemas: HashMap<u16, String> = HashMap::new();
            let mut messages = Vec::new();
            let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
            while let Some(event) = reader.next_event() {
                match event.map_err(|e| mcap_err(Some(consumed), e))? {
                    LinearReadEvent::ReadRequest(n) => {
                        let got = file
                            .input
                            .read(reader.insert(n))
                            .map_err(|e| BagError::io(path, e))?;
                        reader.notify_read(got);
                        consumed += got as u64;
                    }
                    LinearReadEvent::Record { opcode, data } => {
                        match mcap::parse_record(opcode, data)
                            .map_err(|e| mcap_err(Some(consumed), e))?
                        {
                            Record::Schema { header, .. } => {
                                schemas.insert(header.id, header.name);
                            }
                            Record::Channel(ch) if !file.channels.contains_key(&ch.id) => {
                                let schema = schemas.get(&ch.schema_id).cloned();
                                file.add_channel(
                                    ch.id,
                                    &ch.topic,
                                    schema.as_deref(),
                                    &ch.message_encoding,
                                    None,
                                );
                            }
                            Record::Message { header, data } => {
                                *counts.entry(header.channel_id).or_default() += 1;
                                messages.push((
                                    header.channel_id,
                                    header.log_time,
                                    data.into_owned(),
                                ));
                            }
                            _ => {}
                        }
                    }
                }
            }
            for (id, n) in counts {
                if let Some(&i) = file.channels.get(&id) {
                    file.topics[i].message_count =
                        Some(file.topics[i].message_count.unwrap_or(0) + n);
                }
            }
            messages.sort_by_key(|m| m.1); // stable: file order among equal log times
            file.time_range = messages
                .first()
                .zip(messages.last())
                .map(|(a, b)| (a.1 as i64, b.1 as i64));
            file.mode = Mode::Loaded(messages.into());
        }
        Ok(file)
    }

    fn add_channel(
        &mut self,
        id: u16,
        topic: &str,
        schema: Option<&str>,
        encoding: &str,
        count: Option<u64>,
    ) {
        // Several channels may carry one topic (different publishers' QoS): one topic entry.
        let idx = match self
            .topics
            .iter()
            .position(|t| t.name == topic && Some(t.msg_type.as_str()) == schema)
        {
            Some(i) => {
                if let (Some(a), Some(b)) = (&mut self.topics[i].message_count, count) {
                    *a += b;
                }
                i
            }
            None => {
                self.topics.push(FileTopic {
                    name: topic.to_string(),
                    msg_type: schema.unwrap_or("").to_string(),
                    serialization_format: encoding.to_string(),
                    message_count: count,
                });
                self.topics.len() - 1
            }
        };
        self.channels.insert(id, idx);
    }

    fn next_indexed(&mut self) -> Option<Result<FileMessage, BagError>> {
        let Mode::Indexed { summary, reader } = &mut self.mode else {
            return None;
        };
        if reader.is_none() {
            let mut options = IndexedReaderOptions::new();
            if let Some(sel) = &self.selected {
                let topics = self
                    .topics
                    .iter()
                    .zip(sel)
                    .filter(|(_, on)| **on)
                    .map(|(t, _)| t.name.clone());
                options = options.include_topics(topics);
            }
            match IndexedReader::new_with_options(summary, options) {
                Ok(r) => *reader = Some(r),
                Err(source) => {
                    return Some(Err(BagError::Mcap {
                        path: self.path.clone(),
                        offset: None,
                        source,
                    }))
                }
            }
        }
        let reader = reader.as_mut().expect("created above");
        loop {
            let event = reader.next_event()?;
            match event {
                Err(source) => {
                    return Some(Err(BagError::Mcap {
                        path: self.path.clone(),
                        offset: None,
                        source,
                    }))
                }
                Ok(IndexedReadEvent::ReadChunkRequest { offset, length }) => {
                    self.chunk_buf.resize(length, 0);
                    let read = self
                        .input
                        .seek(SeekFrom::Start(offset))
                        .and_then(|_| self.input.read_exact(&mut self.chunk_buf));
                    if let Err(e) = read {
                        return Some(Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            BagError::Truncated {
                                path: self.path.clone(),
                                detail: format!("chunk data at byte {offset} ({length} bytes) runs past the end of the file"),
                            }
                        } else {
                            BagError::io(&self.path, e)
                        }));
                    }
                    if let Err(source) = reader.insert_chunk_record_data(offset, &self.chunk_buf) {
                        return Some(Err(BagError::Mcap {
                            path: self.path.clone(),
                            offset: Some(offset),
                            source,
                        }));
                    }
                }
                Ok(IndexedReadEvent::Message { header, data }) => {
                    let Some(&topic) = self.channels.get(&header.channel_id) else {
                        return Some(Err(BagError::Mcap {
                            path: self.path.clone(),
                            offset: None,
                            source: McapError::UnknownChannel(header.sequence, header.channel_id),
                        }));
                    };
                    if self.selected.as_ref().is_some_and(|s| !s[topic]) {
                        continue;
                    }
                    return Some(Ok(FileMessage {
                        topic,
                        log_time_ns: header.log_time as i64,
                        data: data.to_vec(),
                    }));
                }
            }
        }
    }
}

impl<R: Read + Seek> FileReader for McapFile<R> {
    fn path(&self) -> &Path {
        &self.path
    }

    fn topics(&self) -> &[FileTopic] {
        &self.topics
    }

    fn select(&mut self, topics: &[usize]) {
        let mut sel = vec![false; self.topics.len()];
        for &t in topics {
            if let Some(s) = sel.get_mut(t) {
                *s = true;
            }
        }
        self.selected = Some(sel);
    }

    fn time_range(&mut self) -> Result<Option<(i64, i64)>, BagError> {
        Ok(self.time_range)
    }

    fn next_message(&mut self) -> Option<Result<FileMessage, BagError>> {
        match &mut self.mode {
            Mode::Indexed { .. } => self.next_indexed(),
            Mode::Loaded(queue) => loop {
                let (channel, log_time, data) = queue.pop_front()?;
                let Some(&topic) = self.channels.get(&channel) else {
                    continue;
                };
                if self.selected.as_ref().is_some_and(|s| !s[topic]) {
                    continue;
                }
                return Some(Ok(FileMessage {
                    topic,
                    log_time_ns: log_time as i64,
                    data,
                }));
            },
        }
    }
}

enum SummaryError {
    Io(std::io::Error),
    Mcap(McapError),
}

fn read_summary<R: Read + Seek>(input: &mut R, size: u64) -> Result<Option<Summary>, SummaryError> {
    let mut reader = SummaryReader::new_with_options(
        mcap::sans_io::summary_reader::SummaryReaderOptions::default().with_file_size(size),
    );
    while let Some(event) = reader.next_event() {
        match event.map_err(SummaryError::Mcap)? {
            SummaryReadEvent::ReadRequest(need) => {
                let got = input.read(reader.insert(need)).map_err(SummaryError::Io)?;
                reader.notify_read(got);
            }
            SummaryReadEvent::SeekRequest(to) => {
                let pos = input.seek(to).map_err(SummaryError::Io)?;
                reader.notify_seeked(pos);
            }
        }
    }
    Ok(reader.finish())
}
