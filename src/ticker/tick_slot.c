/*
 * Tick slots: the databases that share a tick grid (same ticker_period, same
 * phase) share one timer.
 *
 * With a timer per database, every tick was a timer-heap pop and push over a
 * heap holding a timer per database and per connection; libevent's heap
 * shift-down, one cache miss per level, was the largest user-space symbol at a
 * thousand databases. A slot's timer fires once per grid point and walks its
 * databases; db->timer keeps only the rare deadlines (maintenance, retries,
 * checks, wake-ups, query timeouts), which sit in the heap untouched.
 *
 * A slot lives while it has databases. Leaving during the walk is safe: the walk
 * keeps its next database in the slot, and a slot emptied during its own walk is
 * freed when the walk ends.
 */
#include <stdlib.h>

#include <event2/event.h>

#include <pgqd-ev/pqev_clock.h>

#include "ticker.h"

struct TickSlot {
	Ticker *t;
	TickSlot *next; /* in t->slots */
	usec_t period, phase;
	struct event *timer;
	Db *dbs;
	Db *walk_next; /* the database the walk visits next */
	bool walking;
};

static void slot_free(TickSlot *s)
{
	TickSlot **pp;

	for (pp = &s->t->slots; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	event_free(s->timer);
	free(s);
}

usec_t tick_grid_next(const Ticker *t, usec_t period, usec_t phase, usec_t now)
{
	usec_t origin = t->start_mono + phase;

	if (now < origin)
		return origin;
	return origin + ((now - origin) / period + 1) * period;
}

static void slot_arm(TickSlot *s, usec_t now)
{
	usec_t at = tick_grid_next(s->t, s->period, s->phase, now);
	struct timeval tv = pqev_usec_to_timeval(at - now);

	evtimer_add(s->timer, &tv);
}

static void on_slot(evutil_socket_t fd, short what, void *arg)
{
	TickSlot *s = arg;
	usec_t now = pqev_clock_now();
	Db *db;

	(void)fd;
	(void)what;
	if (s->t->stopping)
		return;
	s->walking = true;
	for (db = s->dbs; db; db = s->walk_next) {
		s->walk_next = db->slot_next;
		db_on_grid(db, now);
	}
	s->walking = false;
	if (!s->dbs) {
		slot_free(s);
		return;
	}
	slot_arm(s, now);
}

void slot_leave(Db *db)
{
	TickSlot *s = db->slot;

	if (!s)
		return;
	if (s->walk_next == db)
		s->walk_next = db->slot_next;
	*db->slot_pprev = db->slot_next;
	if (db->slot_next)
		db->slot_next->slot_pprev = db->slot_pprev;
	db->slot = NULL;
	db->slot_next = NULL;
	db->slot_pprev = NULL;
	if (!s->dbs && !s->walking)
		slot_free(s);
}

int slot_join(Db *db)
{
	Ticker *t = db->t;
	usec_t period = db->cl->ticker_period, phase = db->phase;
	TickSlot *s;

	if (db->slot && db->slot->period == period && db->slot->phase == phase)
		return 0;
	slot_leave(db);
	for (s = t->slots; s; s = s->next)
		if (s->period == period && s->phase == phase)
			break;
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -1;
		s->t = t;
		s->period = period;
		s->phase = phase;
		s->timer = evtimer_new(t->base, on_slot, s);
		if (!s->timer) {
			free(s);
			return -1;
		}
		s->next = t->slots;
		t->slots = s;
		slot_arm(s, pqev_clock_now());
	}
	db->slot = s;
	db->slot_next = s->dbs;
	if (s->dbs)
		s->dbs->slot_pprev = &db->slot_next;
	db->slot_pprev = &s->dbs;
	s->dbs = db;
	return 0;
}
