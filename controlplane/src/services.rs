//! The service manager: turns ready pods into endpoint snapshots (one per service, with a
//! monotonic version) and fans every new snapshot out to subscribed proxies.
