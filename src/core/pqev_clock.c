/*
 * Monotonic clock cached per loop pass (see pqev_clock.h for how a pass is
 * detected from libevent's own time cache), and wall-clock helpers.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_clock.h>

static struct {
	struct event_base *base;
	struct timeval pass; /* libevent's cached time when `now` was read */
	usec_t now;
	bool valid;
} clk;

static usec_t ts_usec(const struct timespec *ts)
{
	return (usec_t)ts->tv_sec * USEC_PER_SEC + (usec_t)ts->tv_nsec / 1000;
}

usec_t pqev_clock_monotonic(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts_usec(&ts);
}

usec_t pqev_clock_wall(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts_usec(&ts);
}

struct event_base *pqev_clock_base_new(void)
{
	struct event_config *cfg = event_config_new();
	struct event_base *base;
	if (!cfg)
		return NULL;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return base;
}

void pqev_clock_attach(struct event_base *base)
{
	clk.base = base;
	clk.valid = false;
}

usec_t pqev_clock_refresh(void)
{
	clk.now = pqev_clock_monotonic();
	clk.valid = clk.base && event_base_gettimeofday_cached(clk.base, &clk.pass) == 0;
	return clk.now;
}

usec_t pqev_clock_now(void)
{
	struct timeval tv;
	/*
	 * NOTE: libevent sets its cache after each wait and clears it outside the
	 * loop (where it then reads the real time on every call, so values differ and
	 * we read the clock each time, which is right outside a pass).
	 */
	if (!clk.base || event_base_gettimeofday_cached(clk.base, &tv) != 0)
		return pqev_clock_monotonic();
	if (clk.valid && tv.tv_sec == clk.pass.tv_sec && tv.tv_usec == clk.pass.tv_usec)
		return clk.now;
	clk.pass = tv;
	clk.now = pqev_clock_monotonic();
	clk.valid = true;
	return clk.now;
}

usec_t pqev_clock_mono_to_wall(usec_t mono)
{
	usec_t now_mono = pqev_clock_monotonic(), now_wall = pqev_clock_wall();
	if (mono >= now_mono)
		return now_wall + (mono - now_mono);
	return now_wall > now_mono - mono ? now_wall - (now_mono - mono) : 0;
}

size_t pqev_clock_format_iso(usec_t wall, char *buf, size_t bufsize)
{
	time_t t = (time_t)(wall / USEC_PER_SEC);
	struct tm tm;
	char tmp[64];
	int n;
	if (!gmtime_r(&t, &tm))
		return 0;
	n = (int)strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
	n += snprintf(tmp + n, sizeof(tmp) - (size_t)n, ".%03uZ",
		      (unsigned)(wall % USEC_PER_SEC / 1000));
	if ((size_t)n + 1 > bufsize)
		return 0;
	memcpy(buf, tmp, (size_t)n + 1);
	return (size_t)n;
}

struct timeval pqev_usec_to_timeval(usec_t usec)
{
	struct timeval tv;
	tv.tv_sec = (time_t)(usec / USEC_PER_SEC);
	tv.tv_usec = (suseconds_t)(usec % USEC_PER_SEC);
	return tv;
}
