"""Flat-earth geometry for short trips around a home point: good to metres over tens of km."""

from __future__ import annotations

import math
from dataclasses import dataclass

KM_PER_DEG_LAT = 111.32
COMPASS = ("NORTH", "NORTHEAST", "EAST", "SOUTHEAST", "SOUTH", "SOUTHWEST", "WEST", "NORTHWEST")


@dataclass(frozen=True, slots=True)
class Point:
    lat: float
    lon: float


def _km_per_deg_lon(lat: float) -> float:
    return KM_PER_DEG_LAT * math.cos(math.radians(lat))


def offset(origin: Point, *, north_km: float, east_km: float) -> Point:
    """The point `north_km` north and `east_km` east of `origin`."""
    return Point(
        origin.lat + north_km / KM_PER_DEG_LAT,
        origin.lon + east_km / _km_per_deg_lon(origin.lat),
    )


def _deltas_km(a: Point, b: Point) -> tuple[float, float]:
    north = (b.lat - a.lat) * KM_PER_DEG_LAT
    east = (b.lon - a.lon) * _km_per_deg_lon((a.lat + b.lat) / 2)
    return north, east


def distance_km(a: Point, b: Point) -> float:
    return math.hypot(*_deltas_km(a, b))


def bearing_deg(a: Point, b: Point) -> float:
    """Heading from `a` to `b`, degrees clockwise from north in [0, 360)."""
    north, east = _deltas_km(a, b)
    return math.degrees(math.atan2(east, north)) % 360.0


def compass(heading: float) -> str:
    """The eight-point compass direction of a heading."""
    return COMPASS[round((heading % 360.0) / 45.0) % 8]


@dataclass(frozen=True, slots=True)
class Route:
    """A polyline driven from its first point to its last."""

    points: tuple[Point, ...]

    @property
    def length_km(self) -> float:
        return sum(distance_km(a, b) for a, b in zip(self.points, self.points[1:], strict=False))

    def at(self, covered_km: float) -> tuple[Point, float]:
        """Position and heading after `covered_km` along the route (clamped to its ends)."""
        heading = 0.0
        remaining = max(0.0, covered_km)
        for a, b in zip(self.points, self.points[1:], strict=False):
            leg = distance_km(a, b)
            if leg == 0.0:
                continue
            heading = bearing_deg(a, b)
            if remaining <= leg:
                f = remaining / leg
                return Point(a.lat + (b.lat - a.lat) * f, a.lon + (b.lon - a.lon) * f), heading
            remaining -= leg
        return self.points[-1], heading


def street_route(start: Point, end: Point) -> Route:
    """Two legs, north-south then east-west, like driving a street grid (heading changes once)."""
    return Route((start, Point(end.lat, start.lon), end))
