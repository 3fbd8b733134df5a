# Copyright (c) mmekd contributors. All rights reserved.
