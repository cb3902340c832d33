//! List paging as the Admin API does it: `page_size` (0 means the default), an opaque
//! `page_token` from the previous page, an empty `next_page_token` on the last page.

use tonic::Status;

/// Default and largest page size.
const DEFAULT: usize = 100;
const MAX: usize = 1000;

/// One page of `items` (already in list order) and the token of the next page.
pub fn page<T>(
    items: Vec<T>,
    page_size: i32,
    page_token: &str,
) -> Result<(Vec<T>, String), Status> {
    let size = match page_size {
        n if n < 0 => {
            return Err(Status::invalid_argument(format!(
                "invalid page_size {n}: must not be negative"
            )))
        }
        0 => DEFAULT,
        n => (n as usize).min(MAX),
    };
    let start = if page_token.is_empty() {
        0
    } else {
        page_token
            .strip_prefix("o")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Status::invalid_argument(format!("invalid page_token {page_token:?}: pass the nextPageToken of the previous page")))?
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(size).collect();
    let next = if start + page.len() < total {
        format!("o{}", start + page.len())
    } else {
        String::new()
    };
    Ok((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        let items: Vec<u32> = (0..5).collect();
        let (p, next) = page(items.clone(), 2, "").unwrap();
        assert_eq!((p, next.as_str()), (vec![0, 1], "o2"));
        let (p, next) = page(items.clone(), 2, "o2").unwrap();
        assert_eq!((p, next.as_str()), (vec![2, 3], "o4"));
        let (p, next) = page(items.clone(), 2, "o4").unwrap();
        assert_eq!((p, next.as_str()), (vec![4], ""));
        let (p, next) = page(items.clone(), 0, "").unwrap();
        assert_eq!((p.len(), next.as_str()), (5, ""));
        assert_eq!(
            page(items.clone(), -1, "").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            page(items, 1, "zz").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
