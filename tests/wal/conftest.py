"""Keep structlog quiet in the WAL tests (warnings and errors are still shown)."""

import logging

import structlog

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
