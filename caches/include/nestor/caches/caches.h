// Umbrella header for nestor_caches.
#pragma once

#include "nestor/caches/hash.h"
#include "nestor/caches/invalidation_clock.h"
#include "nestor/caches/iotlb.h"
#include "nestor/caches/paging_structure_caches.h"
#include "nestor/caches/set_assoc_cache.h"
#include "nestor/caches/stats.h"
#include "nestor/caches/structure_caches.h"
