//! One sqlite3 storage file (`.db3`) of rosbag2: tables `topics(id, name, type,
//! serialization_format, ...)` and `messages(id, topic_id, timestamp, data)`, the same in
//! every rosbag2 release since Foxy and in `rosbags`.
//!
//! Messages are read in `(timestamp, id)` order in small pages (keyset pagination over
//! rosbag2's `timestamp_idx`), so memory stays small whatever the file size. SQLite needs a
//! database, not a byte stream: tests build one in memory and use [`SqliteFile::from_connection`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::reader::{FileMessage, FileReader, FileTopic};
use super::BagError;

/// Rows fetched per query: bounded so a bag of large images does not load many at once.
const PAGE: usize = 16;

/// See the module docs.
pub struct SqliteFile {
    path: PathBuf,
    conn: Connection,
    topics: Vec<FileTopic>,
    /// Database `topics.id` of each entry of `topics`.
    ids: Vec<i64>,
    selected: Option<Vec<usize>>,
    page: VecDeque<FileMessage>,
    /// Keyset position: last (timestamp, id) read.
    after: Option<(i64, i64)>,
    done: bool,
}

impl SqliteFile {
    /// Opens a `.db3` file read-only.
    pub fn open(path: &Path) -> Result<Self, BagError> {
        // Check existence first: SQLite's own message for a missing file is vague.
        std::fs::metadata(path).map_err(|e| BagError::io(path, e))?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| BagError::Sqlite {
            path: path.to_path_buf(),
            what: "opening",
            source,
        })?;
        Self::from_connection(conn, path)
    }

    /// Reads a rosbag2 database through an open connection (`path` names it in errors).
    pub fn from_connection(conn: Connection, path: &Path) -> Result<Self, BagError> {
        let err = |what: &'static str| {
            let path = path.to_path_buf();
            move |source| BagError::Sqlite { path, what, source }
        };
        let mut topics = Vec::new();
        let mut ids = Vec::new();
        {
            let mut stmt = conn
                .prepare("SELECT id, name, type, serialization_format FROM topics ORDER BY id")
                .map_err(err("reading table `topics`"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(err("reading table `topics`"))?;
            for row in rows {
                let (id, name, msg_type, format) = row.map_err(err("reading table `topics`"))?;
                ids.push(id);
                topics.push(FileTopic {
                    name,
                    msg_type,
                    serialization_format: format,
                    message_count: None,
                });
            }
        }
        // Fail now, not at the first message, if `messages` is missing or unreadable.
        conn.prepare("SELECT id, topic_id, timestamp, data FROM messages LIMIT 0")
            .map_err(err("reading table `messages`"))?;
        Ok(SqliteFile {
            path: path.to_path_buf(),
            conn,
            topics,
            ids,
            selected: None,
            page: VecDeque::new(),
            after: None,
            done: false,
        })
    }

    fn fetch_page(&mut self) -> Result<(), BagError> {
        let filter = match &self.selected {
            Some(sel) if sel.is_empty() => {
                self.done = true;
                return Ok(());
            }
            Some(sel) => format!(
                " AND topic_id IN ({})",
                sel.iter()
                    .map(|&i| self.ids[i].to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => String::new(),
        };
        let (t, id) = self.after.unwrap_or((i64::MIN, i64::MIN));
        let sql = format!(
            "SELECT id, topic_id, timestamp, data FROM messages \
             WHERE (timestamp > ?1 OR (timestamp = ?1 AND id > ?2)){filter} \
             ORDER BY timestamp, id LIMIT {PAGE}"
        );
        let path = self.path.clone();
        let err = move |source| BagError::Sqlite {
            path: path.clone(),
            what: "reading table `messages`",
            source,
        };
        let mut stmt = self.conn.prepare_cached(&sql).map_err(&err)?;
        let mut rows = stmt.query((t, id)).map_err(&err)?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(&err)? {
            let id: i64 = row.get(0).map_err(&err)?;
            let topic_id: i64 = row.get(1).map_err(&err)?;
            let timestamp: i64 = row.get(2).map_err(&err)?;
            let data: Vec<u8> = row.get(3).map_err(&err)?;
            n += 1;
            self.after = Some((timestamp, id));
            let Some(topic) = self.ids.iter().position(|&i| i == topic_id) else {
                return Err(BagError::Metadata {
                    path: self.path.clone(),
                    detail: format!("message {id} refers to topic id {topic_id}, which is not in table `topics`"),
                });
            };
            self.page.push_back(FileMessage {
                topic,
                log_time_ns: timestamp,
                data,
            });
        }
        if n < PAGE {
            self.done = true;
        }
        Ok(())
    }
}

impl FileReader for SqliteFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn topics(&self) -> &[FileTopic] {
        &self.topics
    }

    fn select(&mut self, topics: &[usize]) {
        self.selected = Some(
            topics
                .iter()
                .copied()
                .filter(|&t| t < self.topics.len())
                .collect(),
        );
    }

    fn time_range(&mut self) -> Result<Option<(i64, i64)>, BagError> {
        self.conn
            .query_row(
                "SELECT MIN(timestamp), MAX(timestamp) FROM messages",
                [],
                |r| Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?)),
            )
            .map_err(|source| BagError::Sqlite {
                path: self.path.clone(),
                what: "reading table `messages`",
                source,
            })
    }

    fn next_message(&mut self) -> Option<Result<FileMessage, BagError>> {
        if self.page.is_empty() && !self.done {
            if let Err(e) = self.fetch_page() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.page.pop_front().map(Ok)
    }
}
