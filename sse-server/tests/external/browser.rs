//! The web page in a real browser (Chromium through WebDriver).
